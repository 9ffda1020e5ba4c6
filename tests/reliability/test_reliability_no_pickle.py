"""Nothing we write is a pickle, and loading never unpickles: saved pipelines (full
and prompt-only) hold no torch pickle markers, and spacy.load works with
torch.load / pickle.load / pickle.loads patched to raise."""
import gc
import pickle

import pytest
import spacy
import torch
from reliability_helpers import build_pipeline

from spacy_softprompt.encoder import clear_backbone_cache

MODEL = "components.transformer.model"
PICKLE_MARKERS = (b"_rebuild_tensor", b"torch._utils", b"torch.storage", b"cnumpy.core.multiarray")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", "pytorch_model.bin", "training_args.bin")


class Unpickled(AssertionError):
    pass


def _refuse(name):
    def refuse(*args, **kwargs):
        raise Unpickled(f"{name} was called while loading a pipeline")

    return refuse


@pytest.fixture(scope="module")
def saved(tiny_megatron, tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    paths = {}
    for kind, overrides in {
        "full_unfrozen": ("tok_soft_cpu.cfg", {}),
        "full_frozen": ("tok_soft-frozen_cpu.cfg", {}),
        "prompt_only": ("tok_soft-frozen_cpu.cfg", {f"{MODEL}.save_backbone": False}),
        "finetune": ("tok_finetune_cpu.cfg", {}),
    }.items():
        config, values = overrides
        nlp = build_pipeline(tiny_megatron, config, **values)
        nlp.to_disk(root / kind)
        paths[kind] = root / kind
    return paths


def _files(path):
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["full_unfrozen", "full_frozen", "prompt_only", "finetune"])
def test_saved_pipeline_has_no_pickles(saved, kind):
    files = _files(saved[kind])
    assert any(f.parent.name == "transformer" and f.name == "model" for f in files)
    for path in files:
        assert not path.name.endswith(PICKLE_SUFFIXES), path
        data = path.read_bytes()
        for marker in PICKLE_MARKERS:
            assert marker not in data, f"{marker!r} in {path}"
        assert not data.startswith(b"\x80\x02") and not data.startswith(b"PK\x03\x04"), f"{path} looks like torch.save output"


def test_prompt_only_is_smaller_than_full(saved):
    size = lambda p: sum(f.stat().st_size for f in _files(p))  # noqa: E731
    assert size(saved["prompt_only"]) < size(saved["full_frozen"])


@pytest.mark.parametrize("kind", ["full_unfrozen", "prompt_only"])
def test_loading_never_unpickles(saved, kind, monkeypatch):
    gc.collect()
    clear_backbone_cache()
    monkeypatch.setattr(torch, "load", _refuse("torch.load"))
    monkeypatch.setattr(torch.serialization, "load", _refuse("torch.serialization.load"))
    monkeypatch.setattr(pickle, "load", _refuse("pickle.load"))
    monkeypatch.setattr(pickle, "loads", _refuse("pickle.loads"))
    nlp = spacy.load(saved[kind])
    doc = nlp("aspirin 10 mg daily\r\nwarfarin held")
    assert doc.text == "aspirin 10 mg daily\r\nwarfarin held"


def test_docbin_output_of_convert_is_not_a_pickle(tmp_path):
    from spacy_softprompt.data.readers import convert_brat_dir, load_docbin

    corpus = tmp_path / "brat"
    corpus.mkdir()
    (corpus / "a.txt").write_text("aspirin 10 mg daily", encoding="utf8")
    (corpus / "a.ann").write_text("T1\tDrug 0 7\taspirin\nT2\tStrength 8 13\t10 mg\nR1\tStrength-Drug Arg1:T2 Arg2:T1\n", encoding="utf8")
    out = tmp_path / "a.spacy"
    convert_brat_dir(corpus, out)
    data = out.read_bytes()
    assert not any(m in data for m in PICKLE_MARKERS) and not data.startswith(b"\x80")
    (doc,) = load_docbin(out)
    assert doc._.relations


def test_mrc_pipeline_has_no_pickles(tiny_megatron, tmp_path, monkeypatch):
    pytest.importorskip("spacy_softprompt.mrc.ner", reason="MRC components not present")
    from spacy.training import Example

    from spacy_softprompt.testing import toy_docs

    nlp = spacy.blank("en")
    nlp.add_pipe(
        "mrc_ner",
        config={"query_mode": "soft", "window_pieces": 64, "model": {"name": str(tiny_megatron), "prompt_length": 4, "init_seed": 0}},
    )
    examples = [Example(nlp.make_doc(d.text), d) for d in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    nlp.to_disk(tmp_path / "mrc")
    for path in _files(tmp_path / "mrc"):
        data = path.read_bytes()
        assert not any(m in data for m in PICKLE_MARKERS), path
    monkeypatch.setattr(torch, "load", _refuse("torch.load"))
    monkeypatch.setattr(pickle, "loads", _refuse("pickle.loads"))
    monkeypatch.setattr(pickle, "load", _refuse("pickle.load"))
    spacy.load(tmp_path / "mrc")("aspirin 10 mg daily")


def test_the_checks_catch_a_pickling_pipeline(tiny_megatron, tmp_path, monkeypatch):
    """Control: plain spacy-transformers (torch.save inside) trips both checks."""
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "transformer",
        config={
            "model": {
                "@architectures": "spacy-transformers.TransformerModel.v3",
                "name": str(tiny_megatron),
                "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 48, "stride": 40},
                "tokenizer_config": {"use_fast": True},
            }
        },
    )
    nlp.initialize()
    nlp.to_disk(tmp_path / "plain")
    assert any(any(m in f.read_bytes() for m in PICKLE_MARKERS) for f in _files(tmp_path / "plain"))
    monkeypatch.setattr(torch, "load", _refuse("torch.load"))
    with pytest.raises(Unpickled):
        spacy.load(tmp_path / "plain")
