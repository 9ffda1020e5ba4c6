"""Fixtures for the study tests: the toy corpus and one torch thread (tiny models
train faster on one thread on a busy machine; the setting is restored)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import synthetic`


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory) -> Path:
    from spacy_softprompt.testing import write_toy_corpus

    return write_toy_corpus(tmp_path_factory.mktemp("study_corpus") / "toy.spacy")


@pytest.fixture(autouse=True)
def one_torch_thread():
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
