"""Load a saved pipeline and, when it fails, say which file of which component.

``spacy.load`` reports a truncated component file as ``ValueError: Unpack
failed`` and a garbage ``config.cfg`` as a parse error in ``'<string>'``.
:func:`load_pipeline` checks ``config.cfg`` and ``meta.json`` first (naming the
file), then loads, and turns any other failure into one
:class:`PipelineLoadError` line naming the component and the file being read.
"""
import os
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from spacy.language import Language

_MAX_MESSAGE = 300


class PipelineLoadError(Exception):
    """A pipeline folder (or package) that cannot be loaded; names the component and file."""


def one_line(message: str, limit: int = _MAX_MESSAGE) -> str:
    """``message`` with its lines joined, blanks collapsed, cut to ``limit`` characters."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _spacy_util_file() -> str:
    import spacy.util

    return os.path.normcase(os.path.abspath(spacy.util.__file__))


def failing_component(err: BaseException) -> Tuple[Optional[str], Optional[Path]]:
    """(component, file) being read when ``err`` was raised inside ``spacy.util.from_disk``:
    the outermost reader's key is the component (``vocab``, ``tokenizer``, a pipe
    name), the innermost ``path / key`` the file."""
    util_file = _spacy_util_file()
    found = []
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        if code.co_name == "from_disk" and os.path.normcase(os.path.abspath(code.co_filename)) == util_file:
            key, path = frame.f_locals.get("key"), frame.f_locals.get("path")
            if isinstance(key, str) and path is not None:
                found.append((key, Path(path) / key))
        tb = tb.tb_next
    if not found:
        return None, None
    return found[0][0], found[-1][1]


def first_unreadable_file(folder: Path) -> Optional[Path]:
    """For a component whose loader reads files outside ``util.from_disk`` (spaCy's
    parser reads ``model`` itself): the first file of ``folder`` that is not valid
    msgpack (or JSON, for ``cfg``/``*.json``), else None."""
    import srsly

    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            if path.name == "cfg" or path.suffix == ".json":
                srsly.read_json(path)
            else:
                srsly.msgpack_loads(path.read_bytes())
        except Exception:  # noqa: BLE001 - that is the one
            return path
    return None


def check_pipeline_folder(path: Path) -> None:
    """Refuse a folder without a readable ``config.cfg`` (or with a broken ``meta.json``), naming the file."""
    import srsly
    from spacy.util import load_config

    if not path.is_dir():
        raise PipelineLoadError(f"{path}: not a pipeline folder (a file)")
    config = path / "config.cfg"
    if not config.is_file():
        raise PipelineLoadError(f"{path}: no config.cfg, so not a saved pipeline folder")
    try:
        load_config(config, interpolate=False)
    except Exception as err:  # noqa: BLE001 - any parse error: named with the file
        text = one_line(str(err)).replace("'<string>'", str(config))
        raise PipelineLoadError(f"{config}: not a valid config: {text}") from None
    meta = path / "meta.json"
    if meta.exists():
        try:
            srsly.read_json(meta)
        except Exception as err:  # noqa: BLE001
            raise PipelineLoadError(f"{meta}: not valid JSON ({type(err).__name__}: {one_line(str(err))})") from None


def load_pipeline(model: Union[str, Path], **kwargs: Any) -> Language:
    """``spacy.load(model, **kwargs)``; every failure while reading the folder becomes
    one :class:`PipelineLoadError` line naming the component and the file
    (errors of our own loaders keep their message, with the place added)."""
    import spacy

    path = Path(model)
    if path.exists():
        check_pipeline_folder(path)
    elif os.sep in str(model) or "/" in str(model):
        raise PipelineLoadError(f"{model}: no such pipeline folder")
    try:
        return spacy.load(model, **kwargs)
    except Exception as err:  # noqa: BLE001 - re-raised with the place
        component, file = failing_component(err)
        if file is not None and file.is_dir():
            file = first_unreadable_file(file) or file
        if component is None:
            if isinstance(err, OSError) or type(err).__module__.startswith("spacy_softprompt"):
                raise
            raise PipelineLoadError(f"{model}: cannot load the pipeline: {type(err).__name__}: {one_line(str(err))}") from err
        raise PipelineLoadError(
            f"{model}: cannot load component '{component}' from {file} "
            f"({type(err).__name__}: {one_line(str(err))}); the file is damaged or from another version: "
            "reinstall or re-save the pipeline"
        ) from err
