"""Torch-level correctness of PromptedEncoder (tiny random MegatronBert and BERT)."""
import numpy
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from spacy_softprompt.encoder import PromptedEncoder, hard_prompt_block
from spacy_softprompt.encoder import model as model_module
from spacy_softprompt.encoder.model import length_chunks
from spacy_softprompt.encoder.prompts import PromptTable, sample_vocab_ids

TEXTS = ["patient was given aspirin daily for pain and fever", "rash", "heparin was stopped"]
ATOL = 1e-5


def load(path):
    backbone = AutoModel.from_pretrained(path)
    backbone.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return backbone, tokenizer


def batch(tokenizer, texts=TEXTS):
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def plain(backbone, enc):
    with torch.no_grad():
        return backbone(**enc).last_hidden_state


def prompted(backbone, tokenizer, seed=0, **kwargs):
    kwargs.setdefault("prompt_length", 5)
    encoder = PromptedEncoder(backbone, **kwargs)
    encoder.init_prompts(
        "vocab",
        num_real_tokens=len(tokenizer),
        exclude_ids=tokenizer.all_special_ids,
        generator=torch.Generator().manual_seed(seed),
    )
    encoder.eval()
    return encoder


def run(encoder, enc, **kwargs):
    with torch.no_grad():
        return encoder(**enc, **kwargs).last_hidden_state


def test_p0_is_bit_identical_to_the_backbone(tiny_model):
    backbone, tokenizer = load(tiny_model)
    enc = batch(tokenizer)
    encoder = PromptedEncoder(backbone, prompt_length=0)
    encoder.eval()
    out = run(encoder, enc)
    assert out.shape == enc["input_ids"].shape + (backbone.config.hidden_size,)
    assert torch.equal(out, plain(backbone, enc))


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_masked_prompt_gives_the_plain_hidden_states(tiny_model, depth):
    backbone, tokenizer = load(tiny_model)
    enc = batch(tokenizer)
    encoder = prompted(backbone, tokenizer, prompt_depth=depth, prompt_names=["a", "b"])
    out = run(encoder, enc, prompt_ids=torch.tensor([0, 1, 0]), mask_prompt=True)
    real = enc["attention_mask"].bool()
    assert out.shape == plain(backbone, enc).shape
    torch.testing.assert_close(out[real], plain(backbone, enc)[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_changing_the_prompt_changes_the_output(tiny_model, depth):
    backbone, tokenizer = load(tiny_model)
    enc = batch(tokenizer)
    encoder = prompted(backbone, tokenizer, prompt_depth=depth)
    first = run(encoder, enc)
    assert not torch.allclose(first, plain(backbone, enc), atol=1e-3)
    with torch.no_grad():
        encoder.prompt_encoder.table.add_(torch.randn_like(encoder.prompt_encoder.table))
    assert not torch.allclose(run(encoder, enc), first, atol=1e-3)


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_alone_equals_padded_batch_and_mixed_prompts_equal_per_prompt(tiny_model, depth):
    backbone, tokenizer = load(tiny_model)
    encoder = prompted(backbone, tokenizer, prompt_depth=depth, prompt_names=["a", "b", "c"])
    enc = batch(tokenizer)
    ids = torch.tensor([2, 0, 1])
    mixed = run(encoder, enc, prompt_ids=ids)
    for row, text in enumerate(TEXTS):
        alone = run(encoder, batch(tokenizer, [text]), prompt_ids=ids[row : row + 1])
        length = alone.shape[1]
        torch.testing.assert_close(mixed[row, :length], alone[0], atol=ATOL, rtol=0)
    for p in range(3):
        same = run(encoder, enc, prompt_ids=torch.full((3,), p))
        rows = ids == p
        torch.testing.assert_close(mixed[rows], same[rows], atol=ATOL, rtol=0)


def test_trainable_parameter_counts(tiny_megatron):
    backbone, tokenizer = load(tiny_megatron)
    H, layers = backbone.config.hidden_size, backbone.config.num_hidden_layers
    total = sum(p.numel() for p in backbone.parameters())
    assert PromptedEncoder(backbone, prompt_length=7).num_trainable_parameters() == total + 7 * H
    backbone, _ = load(tiny_megatron)
    frozen = PromptedEncoder(backbone, prompt_length=7, freeze_backbone=True)
    assert frozen.num_trainable_parameters() == 7 * H
    backbone, _ = load(tiny_megatron)
    deep = PromptedEncoder(backbone, prompt_length=7, prompt_depth="deep", freeze_backbone=True)
    assert deep.num_trainable_parameters() == 7 * 2 * layers * H
    assert sum(p.numel() for p in deep.prompt_parameters()) == 7 * 2 * layers * H
    backbone, _ = load(tiny_megatron)
    named = PromptedEncoder(backbone, prompt_length=7, prompt_names=["x", "y"], freeze_backbone=True)
    assert named.num_trainable_parameters() == 2 * 7 * H
    assert all("prompt_encoder" in name for name, p in named.named_parameters() if p.requires_grad)


def test_max_text_length_and_hard_prompt_budget(tiny_megatron):
    backbone, tokenizer = load(tiny_megatron)
    block, _ = hard_prompt_block(tokenizer, "find the drugs")
    encoder = PromptedEncoder(backbone, prompt_length=20, hard_prompt_ids=block)
    assert encoder.max_text_length == backbone.config.max_position_embeddings - 20 - len(block)
    with pytest.raises(ValueError, match="no room"):
        PromptedEncoder(backbone, prompt_length=backbone.config.max_position_embeddings)


def test_frozen_backbone_stays_in_eval_mode(tiny_bert):
    backbone, tokenizer = load(tiny_bert)
    encoder = prompted(backbone, tokenizer, freeze_backbone=True)
    encoder.train()
    assert encoder.training and encoder.prompt_encoder.training
    assert not any(m.training for m in encoder.backbone.modules())
    enc = batch(tokenizer)
    first, second = encoder(**enc).last_hidden_state, encoder(**enc).last_hidden_state
    assert torch.equal(first, second)  # no dropout
    assert all(p.grad is None and not p.requires_grad for p in encoder.backbone.parameters())
    first.sum().backward()
    assert all(p.grad is None for p in encoder.backbone.parameters())
    assert encoder.prompt_encoder.table.grad is not None


def test_unfrozen_backbone_trains_with_dropout(tiny_bert):
    backbone, tokenizer = load(tiny_bert)
    encoder = prompted(backbone, tokenizer)
    encoder.train()
    assert encoder.backbone.training
    enc = batch(tokenizer)
    assert not torch.equal(encoder(**enc).last_hidden_state, encoder(**enc).last_hidden_state)


def test_prompt_init_methods(tiny_megatron):
    backbone, tokenizer = load(tiny_megatron)
    embedding = backbone.get_input_embeddings().weight
    n_real = len(tokenizer)
    assert embedding.shape[0] == n_real + 7  # GatorTron-style padding rows
    encoder = PromptedEncoder(backbone, prompt_length=5, prompt_names=["a", "b"])
    ids_a = tokenizer("aspirin daily", add_special_tokens=False)["input_ids"]
    ids_b = tokenizer("rash", add_special_tokens=False)["input_ids"]
    encoder.init_prompts("text", token_ids=[ids_a, ids_b])
    table = encoder.prompt_encoder.table.detach()
    expected_a = embedding[torch.tensor((ids_a * 5)[:5])]
    torch.testing.assert_close(table[0], expected_a)
    torch.testing.assert_close(table[1], embedding[torch.tensor(ids_b * 5)])
    # vocab: only real, non-special rows
    for seed in range(20):
        ids = sample_vocab_ids(30, n_real, exclude_ids=tokenizer.all_special_ids, generator=torch.Generator().manual_seed(seed))
        assert max(ids) < n_real and not set(ids) & set(tokenizer.all_special_ids)
        assert len(set(ids)) == 30
    encoder.init_prompts("vocab", num_real_tokens=n_real, exclude_ids=tokenizer.all_special_ids)
    rows = encoder.prompt_encoder.table.detach().reshape(-1, embedding.shape[1])
    real = embedding[:n_real]
    assert all(any(torch.equal(r, e) for e in real) for r in rows)
    # random: scaled to the table
    big = PromptedEncoder(backbone, prompt_length=100)
    big.init_prompts("random", num_real_tokens=n_real, generator=torch.Generator().manual_seed(0))
    values = big.prompt_encoder.table.detach()[0]
    assert abs(values.std().item() - real.std().item()) < 0.3 * real.std().item()


def test_deep_text_init_is_the_prefix_of_that_text(tiny_bert):
    """A deep prompt initialised from text holds each layer's keys/values of that text."""
    backbone, tokenizer = load(tiny_bert)
    ids = tokenizer("aspirin daily for pain", add_special_tokens=False)["input_ids"]
    encoder = PromptedEncoder(backbone, prompt_length=len(ids), prompt_depth="deep")
    encoder.init_prompts("text", token_ids=[ids])
    captured = {}
    layer = backbone.encoder.layer[1].attention.self
    hooks = [
        layer.key.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o)),
        layer.value.register_forward_hook(lambda m, i, o: captured.__setitem__("v", o)),
    ]
    with torch.no_grad():
        backbone(input_ids=torch.tensor([ids]))
    for h in hooks:
        h.remove()
    H = backbone.config.hidden_size
    table = encoder.prompt_encoder.table.detach()[0].reshape(len(ids), backbone.config.num_hidden_layers, 2, H)
    torch.testing.assert_close(table[:, 1, 0], captured["k"][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(table[:, 1, 1], captured["v"][0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_reparameterization_folds_exactly(tiny_megatron, depth):
    backbone, tokenizer = load(tiny_megatron)
    encoder = prompted(backbone, tokenizer, prompt_depth=depth, reparameterize=True, reparameterize_hidden_size=16)
    assert encoder.prompt_encoder.reparameterize
    enc = batch(tokenizer)
    before = run(encoder, enc)
    state = encoder.export_prompt_state()
    encoder.fold_reparameterization()
    assert not encoder.prompt_encoder.reparameterize
    assert set(n for n, _ in encoder.prompt_encoder.named_parameters()) == {"table"}
    torch.testing.assert_close(run(encoder, enc), before, atol=1e-6, rtol=0)
    torch.testing.assert_close(state["table"], encoder.prompt_encoder.table.detach())


def test_prompt_table_shapes():
    table = PromptTable(3, 4, 10)
    assert table(torch.tensor([2, 0])).shape == (2, 4, 10)
    assert PromptTable(3, 4, 10, reparameterize=True, hidden_size=8, input_width=6).full().shape == (3, 4, 10)


def test_hard_prompt_matches_the_manual_pair_encoding(tiny_model):
    backbone, tokenizer = load(tiny_model)
    block, text_type = hard_prompt_block(tokenizer, "find the drug")
    assert block[-1] == tokenizer.sep_token_id and text_type == 1
    encoder = PromptedEncoder(backbone, hard_prompt_ids=block, text_token_type_id=text_type)
    encoder.eval()
    enc = batch(tokenizer)
    out = run(encoder, enc)
    assert out.shape[:2] == enc["input_ids"].shape
    for row, text in enumerate(TEXTS):
        pair = tokenizer("find the drug", text, return_tensors="pt")
        ref = plain(backbone, dict(pair))[0]
        n_text = int(enc["attention_mask"][row].sum())
        K = len(block)
        expected = torch.cat([ref[:1], ref[1 + K :]])
        assert expected.shape[0] == n_text
        torch.testing.assert_close(out[row, :n_text], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_soft_and_hard_prompt_together(tiny_bert, depth):
    backbone, tokenizer = load(tiny_bert)
    block, text_type = hard_prompt_block(tokenizer, "find the drug")
    encoder = prompted(backbone, tokenizer, prompt_depth=depth, hard_prompt_ids=block, text_token_type_id=text_type)
    enc = batch(tokenizer)
    masked = run(encoder, enc, mask_prompt=True)
    hard_only = PromptedEncoder(backbone, hard_prompt_ids=block, text_token_type_id=text_type).eval()
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(masked[real], run(hard_only, enc)[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("depth", ["input", "deep"])
@pytest.mark.parametrize("frozen", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, depth, frozen):
    grads = []
    for checkpointing in (False, True):
        backbone, tokenizer = load(tiny_model)
        encoder = prompted(
            backbone, tokenizer, prompt_depth=depth, freeze_backbone=frozen, gradient_checkpointing=checkpointing
        )
        # no dropout, so both runs are deterministic
        backbone.config.hidden_dropout_prob = 0.0
        for module in backbone.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if hasattr(module, "dropout_prob"):
                module.dropout_prob = 0.0
        encoder.train()
        torch.manual_seed(0)
        out = encoder(**batch(tokenizer)).last_hidden_state
        (out**2).sum().backward()
        grads.append(encoder.prompt_encoder.table.grad.clone())
        if not frozen:
            grads.append(backbone.embeddings.word_embeddings.weight.grad.clone())
    half = len(grads) // 2
    for a, b in zip(grads[:half], grads[half:]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert a.abs().sum() > 0


def _tiny_roberta():
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, pad_token_id=0, type_vocab_size=1,
    )
    return RobertaModel(config).eval()


def _tiny_deberta():
    from transformers import DebertaV2Config, DebertaV2Model

    torch.manual_seed(0)
    config = DebertaV2Config(
        vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=0, type_vocab_size=0, relative_attention=True,
        position_biased_input=False, pos_att_type=["p2c", "c2p"],
    )
    return DebertaV2Model(config).eval()


def _id_batch():
    ids = torch.tensor([[5, 17, 18, 19, 20, 6], [5, 30, 6, 0, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_roberta_positions(depth):
    backbone = _tiny_roberta()
    enc = _id_batch()
    encoder = PromptedEncoder(backbone, prompt_length=4, prompt_depth=depth)
    encoder.init_prompts("random", generator=torch.Generator().manual_seed(0))
    encoder.eval()
    assert encoder.max_text_length == 66 - (0 + 1) - 4  # positions start at padding_idx + 1
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(
        run(encoder, enc, mask_prompt=True)[real], plain(backbone, enc)[real], atol=ATOL, rtol=0
    )
    assert not torch.allclose(run(encoder, enc)[real], plain(backbone, enc)[real], atol=1e-3)


def test_deberta_input_prompts_and_no_deep_prompts():
    backbone = _tiny_deberta()
    enc = _id_batch()
    with pytest.raises(ValueError, match="prefix key/values"):
        PromptedEncoder(backbone, prompt_length=4, prompt_depth="deep")
    encoder = PromptedEncoder(backbone, prompt_length=4)
    encoder.init_prompts("random", generator=torch.Generator().manual_seed(0))
    encoder.eval()
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(
        run(encoder, enc, mask_prompt=True)[real], plain(backbone, enc)[real], atol=ATOL, rtol=0
    )


def test_bad_prompt_ids_are_refused(tiny_bert):
    backbone, tokenizer = load(tiny_bert)
    encoder = prompted(backbone, tokenizer, prompt_names=["a", "b"])
    enc = batch(tokenizer)
    with pytest.raises(ValueError, match="prompt_ids"):
        run(encoder, enc, prompt_ids=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="entries"):
        run(encoder, enc, prompt_ids=torch.tensor([0, 1]))
    assert encoder.prompt_index("b") == 1
    with pytest.raises(ValueError, match="unknown prompt"):
        encoder.prompt_index("zzz")


@pytest.mark.parametrize("depth,hard", [("input", False), ("deep", False), ("deep", True)])
def test_inference_chunks_give_the_unchunked_output(tiny_model, depth, hard):
    """Without gradients, rows go through sorted by length, in chunks cut to their
    longest row: the real positions get the numbers of one padded call, padding gets 0."""
    backbone, tokenizer = load(tiny_model)
    hard_ids = hard_prompt_block(tokenizer, "find the drugs")[0] if hard else None
    encoder = prompted(backbone, tokenizer, prompt_depth=depth, prompt_names=["a", "b"], hard_prompt_ids=hard_ids)
    texts = TEXTS * 3 + ["warfarin"]
    enc = batch(tokenizer, texts)
    ids = torch.tensor([i % 2 for i in range(len(texts))])
    real = enc["attention_mask"].bool()
    encoder.eval()
    with torch.no_grad():  # the unchunked path: one backbone call over the padded batch
        whole = encoder._forward_rows(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), ids, False, True)
    calls = []
    hook = encoder.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs.get("input_ids", kwargs.get("inputs_embeds")).shape), with_kwargs=True
    )
    try:
        encoder.inference_chunk_rows = 4
        encoder.inference_padding_tolerance = float("inf")
        with torch.no_grad():
            by_rows = encoder(**enc, prompt_ids=ids, output_hidden_states=True)
        assert [shape[0] for shape in calls] == [4, 4, 2]  # 10 rows in chunks of 4
        calls.clear()
        encoder.inference_chunk_rows = 0
        encoder.inference_padding_tolerance = 0.0
        with torch.no_grad():
            by_length = encoder(**enc, prompt_ids=ids, output_hidden_states=True)
        lengths = sorted(set(enc["attention_mask"].sum(1).tolist()))
        assert len(calls) == len(lengths)  # no padding allowed: one chunk per distinct length
        assert sorted(shape[1] - encoder.prompt_length * (depth == "input") for shape in calls) == [
            n + len(hard_ids or []) for n in lengths
        ]
        calls.clear()
        encoder.inference_padding_tolerance = None  # the device's default (cpu here)
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(model_module.INFERENCE_PADDING_TOLERANCE, "cpu", 0.0)
            with torch.no_grad():
                encoder(**enc, prompt_ids=ids)
            assert len(calls) == len(lengths)
            calls.clear()
            patch.setitem(model_module.INFERENCE_PADDING_TOLERANCE, "cpu", float("inf"))
            with torch.no_grad():
                encoder(**enc, prompt_ids=ids)
            assert len(calls) == 1
            calls.clear()
            budget = 2 * max(lengths)  # the device's position budget: rows x longest row, prompts apart
            patch.setitem(model_module.INFERENCE_CHUNK_POSITIONS, "cpu", budget)
            with torch.no_grad():
                capped = encoder(**enc, prompt_ids=ids, output_hidden_states=True)
            added = encoder.prompt_length * (depth == "input") + len(hard_ids or [])
            assert len(calls) > 1 and all(shape[0] * (shape[1] - added) <= budget for shape in calls)
        calls.clear()
        encoder(**enc, prompt_ids=ids)  # gradients on (training): one call, never chunked
        assert len(calls) == 1
    finally:
        hook.remove()
    for chunked in (by_rows, by_length, capped):
        torch.testing.assert_close(chunked.last_hidden_state[real], whole.last_hidden_state[real], atol=ATOL, rtol=0)
        assert len(chunked.hidden_states) == len(whole.hidden_states)
        for mine, theirs in zip(chunked.hidden_states, whole.hidden_states):
            torch.testing.assert_close(mine[real], theirs[real], atol=ATOL, rtol=0)
    assert not by_length.last_hidden_state[~real].any()
    assert not any(layer[~real].any() for layer in by_length.hidden_states)  # the scatter zeroes padding itself


def test_length_chunks_bound_padding_and_rows():
    extents = numpy.array([10, 50, 12, 48, 11, 50, 9])
    chunks = length_chunks(extents, max_rows=0, tolerance=0.1)
    assert sorted(numpy.concatenate(chunks).tolist()) == list(range(7))
    for rows in chunks:
        assert extents[rows].max() * len(rows) <= 1.1 * extents[rows].sum()
    assert [sorted(extents[rows].tolist()) for rows in chunks] == [[9, 10, 11], [12], [48, 50, 50]]  # 12 * 4 > 1.1 * 42
    assert [len(rows) for rows in length_chunks(extents, max_rows=3, tolerance=float("inf"))] == [3, 3, 1]
    # at most 100 positions (rows x longest row); a lone row longer than that still gets its chunk
    by_positions = length_chunks(extents, tolerance=float("inf"), max_positions=100)
    assert [sorted(extents[rows].tolist()) for rows in by_positions] == [[9, 10, 11, 12], [48, 50], [50]]
    assert [len(rows) for rows in length_chunks(numpy.array([120, 5]), tolerance=float("inf"), max_positions=100)] == [1, 1]
    assert length_chunks(numpy.zeros((0,), dtype=int)) == []


def test_one_prompt_prefix_is_shared_not_copied(tiny_model):
    """With a single prompt the deep prefix is looked up once and expanded over
    the rows (a view); outputs and prompt gradients equal the per-row lookup."""
    backbone, tokenizer = load(tiny_model)
    encoder = prompted(backbone, tokenizer, prompt_depth="deep")
    enc = batch(tokenizer)
    ids = torch.zeros(len(TEXTS), dtype=torch.long)
    prefix = encoder._prefix(ids, torch.float32)
    assert prefix[0][0].shape[0] == len(TEXTS) and prefix[0][0].stride(0) == 0
    results = []
    for names in (["only"], ["only", "unused"]):  # two names: the per-row lookup
        encoder._prompt_names = names
        encoder.prompt_encoder.table.grad = None
        encoder.train()
        for module in encoder.modules():  # no dropout: both runs deterministic
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if hasattr(module, "dropout_prob"):
                module.dropout_prob = 0.0
        out = encoder(**enc, prompt_ids=ids).last_hidden_state
        (out**2).sum().backward()
        results.append((out.detach(), encoder.prompt_encoder.table.grad.clone()))
    encoder._prompt_names = ["only"]
    torch.testing.assert_close(results[0][0], results[1][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)
    assert results[0][1].abs().sum() > 0


def test_inference_chunks_share_one_prompt_lookup(tiny_model):
    """Inference in length chunks with one deep prompt: the prompt encoder runs once per
    forward, not once per chunk, and the output equals the unchunked forward's."""
    backbone, tokenizer = load(tiny_model)
    encoder = prompted(backbone, tokenizer, prompt_depth="deep")
    texts = TEXTS * 3 + ["warfarin"]
    enc = batch(tokenizer, texts)
    real = enc["attention_mask"].bool()
    encoder.eval()
    with torch.no_grad():
        whole = encoder._forward_rows(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), None, False, None)
    lookups = []
    hook = encoder.prompt_encoder.register_forward_hook(lambda module, args, out: lookups.append(out.shape))
    backbone_calls = []
    hook2 = encoder.backbone.register_forward_pre_hook(lambda module, args: backbone_calls.append(1))
    try:
        encoder.inference_chunk_rows = 4
        encoder.inference_padding_tolerance = 0.0
        with torch.no_grad():
            chunked = encoder(**enc)
    finally:
        hook.remove()
        hook2.remove()
    assert len(backbone_calls) > 1 and len(lookups) == 1 and lookups[0][0] == 1
    torch.testing.assert_close(chunked.last_hidden_state[real], whole.last_hidden_state[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("alignment", [16, 7])
def test_key_alignment_pads_the_deep_prompt_keys_without_changing_the_output(tiny_model, alignment):
    """Without gradients on CPU, a deep prompt's keys get masked zero keys so that prompt + row
    width is a multiple of the alignment (faster CPU attention kernels); the real positions get
    the numbers of the unaligned call, and training calls are never padded."""
    backbone, tokenizer = load(tiny_model)
    encoder = prompted(backbone, tokenizer, prompt_depth="deep", prompt_length=3)
    enc = batch(tokenizer, TEXTS * 2 + ["warfarin"])
    real = enc["attention_mask"].bool()
    keys = []
    hook = encoder.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: keys.append((kwargs["past_key_values"][0][0].shape[2], kwargs["input_ids"].shape[1],
                                                  kwargs["attention_mask"].shape[1])), with_kwargs=True)
    encoder.eval()
    try:
        encoder.inference_key_alignment = 0
        with torch.no_grad():
            plain = encoder(**enc, output_hidden_states=True)
        assert all(prefix == 3 for prefix, _, _ in keys)
        keys.clear()
        encoder.inference_key_alignment = alignment
        with torch.no_grad():
            aligned = encoder(**enc, output_hidden_states=True)
        assert keys and all((prefix + width) % alignment == 0 and mask == prefix + width for prefix, width, mask in keys)
        assert any(prefix > 3 for prefix, _, _ in keys)
        keys.clear()
        encoder(**enc)  # gradients on: the training call keeps the prompt's own keys
        assert [prefix for prefix, _, _ in keys] == [3]
    finally:
        hook.remove()
    torch.testing.assert_close(aligned.last_hidden_state[real], plain.last_hidden_state[real], atol=ATOL, rtol=0)
    for mine, theirs in zip(aligned.hidden_states, plain.hidden_states):
        torch.testing.assert_close(mine[real], theirs[real], atol=ATOL, rtol=0)
    assert model_module.INFERENCE_KEY_ALIGNMENT == {"cpu": 16, "cuda": 0}


def test_key_alignment_defaults_to_sdpa_backbones_on_cpu(tiny_model):
    """The device's default applies where the backbone's attention is torch's SDPA (whose CPU
    kernel the alignment is for); an eager attention (MegatronBert) keeps the prompt's keys."""
    backbone, tokenizer = load(tiny_model)
    encoder = prompted(backbone, tokenizer, prompt_depth="deep", prompt_length=3)
    enc = batch(tokenizer, TEXTS)
    prefixes = []
    hook = encoder.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: prefixes.append((kwargs["past_key_values"][0][0].shape[2], kwargs["input_ids"].shape[1])),
        with_kwargs=True)
    encoder.eval()
    try:
        with torch.no_grad():
            encoder(**enc)
    finally:
        hook.remove()
    sdpa = encoder.backbone.config._attn_implementation == "sdpa"
    assert all(((prefix + width) % 16 == 0) if sdpa else prefix == 3 for prefix, width in prefixes)
