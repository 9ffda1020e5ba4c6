"""GPU paths: --gpu-id 0, gpu_allocator="pytorch", fp16/bf16 mixed precision,
gradient checkpointing.  Opt-in: SPACY_SOFTPROMPT_GPU_TESTS=1 on a CUDA machine."""
import numpy
import pytest
import torch

from encoder_helpers import TEXTS, encoder_of, hidden, initialize, make_nlp, state_copy

pytestmark = pytest.mark.gpu


def _np(array):
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


@pytest.fixture
def gpu():
    from thinc.api import require_cpu, require_gpu, set_gpu_allocator

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    set_gpu_allocator("pytorch")
    require_gpu(0)
    yield torch.device("cuda", 0)
    require_cpu()


def _train_until_the_prompt_moves(nlp, min_steps=3, max_steps=24):
    """Losses of the updates until the prompt table changed (at least ``min_steps``). fp16 starts its loss
    scale at 2**16 (PyTorch's default): a step whose scaled gradients overflow is skipped and the scale
    halved, so the first fp16 steps may leave the prompt as it was."""
    from spacy_softprompt.optimizers import PromptAdam

    egs = initialize(nlp)
    encoder = encoder_of(nlp)
    optimizer = PromptAdam(learn_rate=1e-4, prompt_learn_rate=1e-2)
    start = encoder.prompt_encoder.table.detach().clone()
    losses = []
    while len(losses) < max_steps:
        losses.append(nlp.update(egs, sgd=optimizer))
        if len(losses) >= min_steps and not torch.equal(start, encoder.prompt_encoder.table.detach()):
            break
    return losses


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("depth", ["input", "deep"])
def test_mixed_precision_training(gpu, tiny_megatron, dtype, depth):
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    nlp = make_nlp(
        tiny_megatron, ner=True, prompt_length=4, prompt_depth=depth, freeze_backbone=True,
        mixed_precision=True, mixed_precision_dtype=dtype,
    )
    shim = nlp.get_pipe("transformer").model.shim
    assert shim._grad_scaler._enabled == (dtype == "float16")
    seen = []
    nlp.initialize()
    encoder = encoder_of(nlp)
    assert encoder.device.type == "cuda"
    handle = encoder.backbone.encoder.layer[0].attention.self.key.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype)
    )
    backbone = state_copy(encoder.backbone)
    prompt = encoder.prompt_encoder.table.detach().clone()
    losses = _train_until_the_prompt_moves(nlp)
    handle.remove()
    assert len(losses) == 3 or dtype == "float16", "only fp16 overflow may skip a step"
    if len(losses) > 3:
        assert shim._grad_scaler._enabled and float(shim._grad_scaler._scale) < 2.0**16
    assert torch.float16 in seen if dtype == "float16" else torch.bfloat16 in seen
    assert all(numpy.isfinite(l["ner"]) for l in losses)
    after = encoder.backbone.state_dict()
    assert all(torch.equal(backbone[k], after[k]) for k in backbone)
    assert not torch.equal(prompt, encoder.prompt_encoder.table.detach())
    doc = nlp(TEXTS[0])
    assert _np(hidden(doc)).dtype == numpy.float32


def test_gradient_checkpointing_on_gpu(gpu, tiny_bert):
    from spacy_softprompt.encoder import PromptedEncoder
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    enc = {k: v.to(gpu) for k, v in tokenizer(TEXTS, padding=True, return_tensors="pt").items()}
    grads = []
    for checkpointing in (False, True):
        backbone = AutoModel.from_pretrained(tiny_bert, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0).to(gpu)
        encoder = PromptedEncoder(backbone, prompt_length=4, prompt_depth="deep", gradient_checkpointing=checkpointing)
        encoder.init_prompts("random", generator=torch.Generator().manual_seed(0))
        encoder.train()
        encoder(**enc).last_hidden_state.pow(2).sum().backward()
        grads.append(encoder.prompt_encoder.table.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-3)


def test_pipeline_on_gpu_matches_cpu_and_round_trips(gpu, tiny_megatron, tmp_path):
    import spacy

    nlp = make_nlp(tiny_megatron, ner=True, prompt_length=4, freeze_backbone=True, save_backbone=False,
                   gradient_checkpointing=True)
    _train_until_the_prompt_moves(nlp, min_steps=2)
    before = [_np(hidden(d)) for d in nlp.pipe(TEXTS)]
    nlp.to_disk(tmp_path / "gpu")
    loaded = spacy.load(tmp_path / "gpu")
    assert encoder_of(loaded).device.type == "cuda"
    for x, doc in zip(before, loaded.pipe(TEXTS)):
        numpy.testing.assert_allclose(x, _np(hidden(doc)), atol=1e-5)
