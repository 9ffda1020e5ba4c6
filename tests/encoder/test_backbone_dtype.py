"""A frozen backbone kept in half precision (``backbone_dtype``, SoftPromptTransformerModel.v2):
the prompt still trains in float32, the output stays float32, saves hold half-size weights and load
back in the same dtype, prompt-only saves verify the checksum of the half-precision weights."""
import numpy
import pytest
import spacy
import torch

from encoder_helpers import TEXTS, encoder_of, hidden, initialize, make_nlp, state_copy
from spacy_softprompt.encoder import EncoderSettings
from spacy_softprompt.optimizers import PromptAdam

V2 = "spacy_softprompt.SoftPromptTransformerModel.v2"


def _nlp(path, dtype, depth="deep", **kwargs):
    return make_nlp(path, ner=True, arch=V2, prompt_length=4, prompt_depth=depth, freeze_backbone=True,
                    init_seed=0, backbone_dtype=dtype, **kwargs)


def _hidden(nlp):
    return [numpy.asarray(hidden(doc)) for doc in nlp.pipe(TEXTS)]


def _folder_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_bf16_backbone_stays_frozen_while_the_prompt_trains(tiny_megatron, depth):
    full, half = _nlp(tiny_megatron, "float32", depth), _nlp(tiny_megatron, "bfloat16", depth)
    initialize(full)
    egs = initialize(half)
    encoder = encoder_of(half)
    assert {p.dtype for p in encoder.backbone.parameters()} == {torch.bfloat16}
    assert encoder.prompt_encoder.table.dtype == torch.float32
    a, b = _hidden(full), _hidden(half)
    assert all(x.dtype == numpy.float32 and y.dtype == numpy.float32 for x, y in zip(a, b))
    scale = max(float(abs(x).max()) for x in a)
    assert max(float(abs(x - y).max()) for x, y in zip(a, b)) / scale < 0.05  # bf16 keeps 8 bits of mantissa
    before, prompt = state_copy(encoder.backbone), encoder.prompt_encoder.table.detach().clone()
    optimizer = PromptAdam(learn_rate=1e-4, prompt_learn_rate=1e-2)
    losses = [half.update(egs, sgd=optimizer)["ner"] for _ in range(3)]
    assert all(numpy.isfinite(losses))
    assert not torch.equal(prompt, encoder.prompt_encoder.table.detach())
    after = encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in encoder.backbone.parameters())


@pytest.mark.parametrize("save_backbone", [True, False])
def test_bf16_backbone_round_trips(tiny_megatron, tmp_path, save_backbone):
    nlp = _nlp(tiny_megatron, "bfloat16", save_backbone=save_backbone)
    initialize(nlp)
    expected = _hidden(nlp)
    nlp.to_disk(tmp_path / "half")
    loaded = spacy.load(tmp_path / "half")
    assert {p.dtype for p in encoder_of(loaded).backbone.parameters()} == {torch.bfloat16}
    assert encoder_of(loaded).backbone_dtype == "bfloat16"
    for x, y in zip(expected, _hidden(loaded)):
        numpy.testing.assert_array_equal(x, y)
    if save_backbone:  # the saved weights are bf16: about half the float32 save
        full = _nlp(tiny_megatron, "float32", save_backbone=True)
        initialize(full)
        full.to_disk(tmp_path / "full")
        assert _folder_bytes(tmp_path / "half" / "transformer") < 0.6 * _folder_bytes(tmp_path / "full" / "transformer")


def test_half_precision_backbone_needs_a_frozen_float32_free_backbone():
    with pytest.raises(ValueError, match="freeze_backbone = true"):
        EncoderSettings(backbone_dtype="bfloat16", freeze_backbone=False)
    with pytest.raises(ValueError, match="adapter_rank = 0"):
        EncoderSettings(backbone_dtype="float16", freeze_backbone=True, adapter_rank=4)
    with pytest.raises(ValueError, match="backbone_dtype must be one of"):
        EncoderSettings(backbone_dtype="int8", freeze_backbone=True)
    assert EncoderSettings().backbone_dtype == "float32"
