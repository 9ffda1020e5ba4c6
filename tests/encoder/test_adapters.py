"""LoRA adapters in a frozen backbone (SoftPromptTransformerModel.v2): training, saving, loading."""
import numpy
import pytest
import spacy
import srsly
from safetensors.torch import load as st_load

from spacy_softprompt.encoder import clear_backbone_cache
from spacy_softprompt.encoder.adapters import base_state_dict, is_adapter_name
from spacy_softprompt.encoder.backbone import backbone_checksum
from spacy_softprompt.optimizers import PromptAdam
from spacy_softprompt.testing import make_random_encoder

from encoder_helpers import TEXTS, encoder_of, hidden, initialize, make_nlp

pytest.importorskip("peft", reason="LoRA adapters need the peft extra (pip install 'spacy-softprompt[peft]')")

V2 = "spacy_softprompt.SoftPromptTransformerModel.v2"


def _lora_nlp(path, **kwargs):
    settings = dict(arch=V2, ner=True, prompt_length=3, prompt_depth="deep", freeze_backbone=True, adapter_rank=4, init_seed=0)
    settings.update(kwargs)
    return make_nlp(path, **settings)


def _train(nlp, steps=3, egs=None):
    egs = egs or initialize(nlp)
    optimizer = PromptAdam(learn_rate=1e-2, prompt_learn_rate=3e-2)
    for _ in range(steps):
        nlp.update(egs, sgd=optimizer)
    return nlp


def _hidden_states(nlp):
    return [hidden(d) for d in nlp.pipe(TEXTS)]


@pytest.fixture
def own_backbone(tmp_path):
    clear_backbone_cache()
    yield make_random_encoder(tmp_path / "backbone", "megatron-bert", vocab_padding=7)
    clear_backbone_cache()


def test_only_adapters_and_prompts_train(own_backbone):
    nlp = _lora_nlp(own_backbone)
    egs = initialize(nlp)
    encoder = encoder_of(nlp)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if is_adapter_name(n)}
    # 2 layers x 6 projections x (lora_A, lora_B)
    assert len(adapters) == 2 * 6 * 2
    assert trainable - adapters == {n for n, _ in encoder.prompt_encoder.named_parameters(prefix="prompt_encoder")}
    base_before = {k: v.clone() for k, v in base_state_dict(encoder.backbone).items()}
    adapters_before = {k: v.clone() for k, v in encoder.export_adapter_state().items()}
    _train(nlp, egs=egs)
    base_after = base_state_dict(encoder.backbone)
    assert all(bool((base_before[k] == base_after[k]).all()) for k in base_before)
    changed = [k for k, v in encoder.export_adapter_state().items() if not bool((v == adapters_before[k]).all())]
    assert any("lora_B" in k for k in changed)  # B starts at zero and must have moved


def test_fresh_adapters_leave_the_output_unchanged(own_backbone):
    plain = make_nlp(own_backbone, ner=True, prompt_length=3, prompt_depth="deep", freeze_backbone=True, init_seed=0)
    initialize(plain)
    lora = _lora_nlp(own_backbone)
    initialize(lora)
    for a, b in zip(_hidden_states(plain), _hidden_states(lora)):
        numpy.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("save_backbone", [True, False])
def test_round_trip_restores_adapters(own_backbone, tmp_path, save_backbone):
    nlp = _train(_lora_nlp(own_backbone, save_backbone=save_backbone))
    before = _hidden_states(nlp)
    nlp.to_disk(tmp_path / "lora")
    msg = srsly.msgpack_loads((tmp_path / "lora" / "transformer" / "model").read_bytes())
    (shim_bytes,) = [b for shims in msg["shims"] for b in shims]
    data = srsly.msgpack_loads(shim_bytes)["encoder"]
    saved_adapters = st_load(data["adapters"])  # safetensors, not pickle
    assert set(saved_adapters) == set(encoder_of(nlp).export_adapter_state())
    if save_backbone:
        state = {}
        for shard in data["backbone"]:
            state.update(st_load(shard))
        assert not any(is_adapter_name(k) or "base_layer" in k for k in state)
    else:
        assert data["backbone"] == []
        assert data["backbone_ref"]["sha256"] == backbone_checksum(encoder_of(nlp).backbone)
    loaded = spacy.load(tmp_path / "lora")
    for a, b in zip(before, _hidden_states(loaded)):
        numpy.testing.assert_allclose(a, b, atol=1e-6)
    assert encoder_of(loaded).backbone_frozen


def test_prompt_only_adapters_do_not_touch_the_shared_backbone(own_backbone, tmp_path):
    plain = _train(make_nlp(own_backbone, ner=True, prompt_length=3, prompt_depth="deep", freeze_backbone=True, save_backbone=False))
    plain.to_disk(tmp_path / "plain")
    lora = _train(_lora_nlp(own_backbone, save_backbone=False))
    lora.to_disk(tmp_path / "lora")
    first = spacy.load(tmp_path / "plain")
    expected = _hidden_states(first)
    spacy.load(tmp_path / "lora")  # must copy the backbone before adding adapters
    assert not any(is_adapter_name(n) for n, _ in encoder_of(first).backbone.named_parameters())
    for a, b in zip(expected, _hidden_states(first)):
        numpy.testing.assert_array_equal(a, b)


def test_adapters_need_a_frozen_backbone(own_backbone):
    with pytest.raises(ValueError, match="freeze_backbone"):
        _lora_nlp(own_backbone, freeze_backbone=False)


def test_v1_does_not_take_adapter_settings(own_backbone):
    with pytest.raises(Exception, match="adapter_rank"):
        make_nlp(own_backbone, prompt_length=3, adapter_rank=4)
