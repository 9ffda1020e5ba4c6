"""Settings written once: the fields of a dataclass as parameters of registered functions.

spaCy and thinc check a config block against the signature of the function it
names and fill in that signature's defaults, so a group of settings that
several functions take (the prompt settings of both soft-prompt architectures,
the settings of both MRC pipes' factories) would be written out in each
signature.  :func:`takes_settings` writes them once, as a dataclass.
"""
import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Sequence, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _default(field: "dataclasses.Field[Any]") -> Any:
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return field.default


def field_defaults(cls: type) -> Dict[str, Any]:
    """``{field name: default}`` of a dataclass whose fields all have defaults."""
    return {field.name: _default(field) for field in dataclasses.fields(cls)}


def takes_settings(cls: type, exclude: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator for a function ``func(own parameters..., *, settings: cls)``.

    The decorated function's signature (what spaCy validates configs against
    and fills defaults from) is ``func``'s own parameters followed by the
    fields of the dataclass ``cls``, with their types and defaults; called,
    it collects those fields into ``settings = cls(...)`` for ``func``.
    Fields named in ``exclude`` are not parameters and keep their defaults
    (an older registered version that predates them)."""

    def decorate(func: F) -> F:
        unknown = set(exclude) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
        fields = [f for f in dataclasses.fields(cls) if f.name not in exclude]
        own = [p for p in inspect.signature(func).parameters.values() if p.name != "settings"]
        extra = [
            inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_default(f), annotation=f.type)
            for f in fields
        ]
        signature = inspect.signature(func).replace(parameters=own + extra)

        @functools.wraps(func)
        def with_settings(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            settings = cls(**{f.name: values.pop(f.name) for f in fields})
            return func(**values, settings=settings)

        with_settings.__signature__ = signature  # type: ignore[attr-defined]
        return with_settings  # type: ignore[return-value]

    return decorate
