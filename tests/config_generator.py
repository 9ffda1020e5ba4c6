"""Shared by the config tests: load a scripts/make_*configs.py generator, and skip the
text comparison on a spaCy other than the pinned one (its auto-fill orders sections differently)."""
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import spacy

REPO = Path(__file__).resolve().parents[1]


def pinned_spacy() -> str:
    lines = (REPO / "constraints.txt").read_text(encoding="utf8").splitlines()
    return next(line.split("==", 1)[1].strip() for line in lines if line.startswith("spacy=="))


# The configs are written by the generator with the pinned spaCy; another spaCy's auto-fill
# (3.8 in the spaCy 3.8 CI leg) orders the sections differently, so the text cannot match.
generated_with_pinned_spacy = pytest.mark.skipif(
    spacy.__version__ != pinned_spacy(),
    reason=f"configs/ are generated with the pinned spaCy {pinned_spacy()} (constraints.txt), "
    f"not {spacy.__version__}",
)


def load_generator(script: str) -> ModuleType:
    """scripts/<script>.py as a module."""
    spec = importlib.util.spec_from_file_location(script, REPO / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
