"""Fixtures of the scale tests (helpers live in ``scale_helpers``)."""
from pathlib import Path

import pytest

from scale_helpers import COMPONENTS, load_components, save_pipeline


@pytest.fixture
def pipeline(tmp_path) -> Path:
    return save_pipeline(tmp_path / "pipeline")


@pytest.fixture
def components() -> Path:
    load_components()
    return COMPONENTS
