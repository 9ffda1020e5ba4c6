"""Shared fixtures: the shared corpora (skipped when absent) and tiny random encoders."""
import os
from pathlib import Path

import pytest

try:  # property tests check behaviour, not time: no per-example deadline (a loaded CI machine is slow)
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("softprompt", deadline=None)
    _hypothesis_settings.load_profile("softprompt")
except ImportError:  # pragma: no cover - hypothesis comes with the test extra
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("SPACY_SOFTPROMPT_CORPORA", REPO_ROOT.parent / "shared" / "corpora"))


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    if not CORPORA.is_dir():
        pytest.skip(f"shared corpora not found at {CORPORA} (set SPACY_SOFTPROMPT_CORPORA)")
    return CORPORA


@pytest.fixture(scope="session")
def tiny_megatron(tmp_path_factory) -> Path:
    """A 2-layer random MegatronBert (GatorTron's class) with a generated vocab."""
    from spacy_softprompt.testing import make_random_encoder

    return make_random_encoder(tmp_path_factory.mktemp("tiny_megatron"), "megatron-bert", vocab_padding=7)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from spacy_softprompt.testing import make_random_encoder

    return make_random_encoder(tmp_path_factory.mktemp("tiny_bert"), "bert")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SPACY_SOFTPROMPT_GPU_TESTS") == "1":
        return
    skip_gpu = pytest.mark.skip(reason="GPU tests are opt-in: set SPACY_SOFTPROMPT_GPU_TESTS=1 on a CUDA machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
