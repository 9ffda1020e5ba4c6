"""The transformers versions this package works with, checked before a backbone is wrapped.

transformers 5 removed the tuple ``past_key_values`` (a per-layer ``(key, value)``
prefix) that deep prompts pass to BERT-family encoders; without this check the
failure would surface as a stack trace deep inside the attention code.
"""
from typing import Optional

from packaging.version import Version

#: the range declared in setup.cfg (spacy-transformers 1.4 caps transformers at 4.53.x)
TRANSFORMERS_MIN = "4.30"
TRANSFORMERS_BELOW = "4.53.3"
#: the version CI installs (constraints.txt)
TRANSFORMERS_TESTED = "4.53.2"
TRANSFORMERS_RANGE = f">={TRANSFORMERS_MIN},<{TRANSFORMERS_BELOW}"


class UnsupportedTransformersError(RuntimeError):
    """The installed transformers is outside the supported range."""


def installed_transformers_version() -> str:
    """The version of the installed ``transformers`` package."""
    import transformers

    return str(transformers.__version__)


def check_transformers(version: Optional[str] = None) -> None:
    """Raise :class:`UnsupportedTransformersError` unless ``version`` (default: the
    installed one) is in :data:`TRANSFORMERS_RANGE`."""
    found = version if version is not None else installed_transformers_version()
    parsed = Version(found)
    if parsed.major >= 5:
        reason = (
            "transformers 5 removed the tuple past_key_values that deep prompts pass to "
            "BERT-family encoders"
        )
    elif parsed < Version(TRANSFORMERS_MIN) or parsed >= Version(TRANSFORMERS_BELOW):
        reason = "spacy-transformers 1.4 and this package are not built for it"
    else:
        return
    raise UnsupportedTransformersError(
        f"spacy-softprompt needs transformers{TRANSFORMERS_RANGE} (tested: {TRANSFORMERS_TESTED}), "
        f"found transformers {found}: {reason}. "
        f'Install a supported one: pip install "transformers{TRANSFORMERS_RANGE}"'
    )
