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


@pytest.fixture(scope="module")
def trained(tiny_bert):
    """A transformer (deep P=4 prompts on the tiny BERT) + token_ner + relation_extractor pipeline trained
    15 steps on the toy docs, and texts to run it on (the toy texts, long ones, an empty one)."""
    import spacy
    from spacy.training import Example

    from spacy_softprompt.testing import toy_docs

    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy_softprompt.SoftPromptTransformerModel.v1", "name": str(tiny_bert),
        "prompt_length": 4, "prompt_depth": "deep", "init_seed": 0, "tokenizer_config": {"use_fast": True},
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 12, "stride": 9},
    }})
    nlp.add_pipe("token_ner")
    nlp.add_pipe("relation_extractor", config={"threshold": 0.3})
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    optimizer.learn_rate = 0.01
    for _ in range(15):
        nlp.update(examples, sgd=optimizer, losses={})
    base = [eg.reference.text for eg in examples]
    texts = base + [" ".join(base[: k + 1]) * (k + 1) for k in range(4)] + ["", "aspirin"]
    return nlp, texts


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SPACY_SOFTPROMPT_GPU_TESTS") == "1":
        return
    skip_gpu = pytest.mark.skip(reason="GPU tests are opt-in: set SPACY_SOFTPROMPT_GPU_TESTS=1 on a CUDA machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
