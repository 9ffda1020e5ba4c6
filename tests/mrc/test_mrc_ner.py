"""mrc_ner on tiny random encoders: rows and batching, word-aligned decoding,
learning (nested spans too), frozen-mode invariants, serialization."""
import numpy
import pytest
import spacy
import torch
from spacy.util import fix_random_seed

from spacy_softprompt.mrc.ner import MRCEntityRecognizer
from spacy_softprompt.mrc.rows import tokenize_docs, tokenize_queries
from spacy_softprompt.optimizers import PromptAdam, PromptOptimizer, is_head_key, is_prompt_key

from test_mrc_helpers import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    NESTED,
    TOY,
    ForwardCounter,
    entity_keys,
    examples,
    gold_entities,
    make_nlp,
    module_of,
    one_torch_thread,
    state_copy,
)

LONG = " ".join(t for t, _ in TOY) + " patient developed severe rash and nausea after metformin 500 mg po bid"


def _trained(path, mode, steps=60, data=TOY):
    fix_random_seed(0)  # dropout draws from torch's global generator
    nlp = make_nlp(path, ner={"query_mode": mode})
    egs = examples(nlp, data, with_relations=False)
    nlp.initialize(lambda: egs)
    optimizer = PromptAdam(learn_rate=3e-3, prompt_learn_rate=3e-2)
    losses = []
    for _ in range(steps):
        losses.append(nlp.update(egs, sgd=optimizer)["mrc_ner"])
    return nlp, losses


def test_labels_and_questions_from_schema_and_data(tiny_bert):
    nlp = make_nlp(tiny_bert, ner={"query_mode": "hard"})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    assert pipe.labels == ("Drug", "Frequency", "Strength")
    assert pipe.encoder.prompt_names == ["Drug", "Frequency", "Strength"]
    assert pipe.cfg["max_span_width"] == 2
    nlp = make_nlp(tiny_bert, ner={"query_mode": "hard"})
    nlp.config["initialize"]["components"]["mrc_ner"] = {"task_schema": "n2c2_2018"}
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    from spacy_softprompt.data.schema import load_schema

    schema = load_schema("n2c2_2018")
    assert list(pipe.labels) == schema.entity_labels
    assert pipe.question("Drug") == schema.question("entities", "Drug")


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_rows_per_batch_are_windows_times_labels_in_one_forward(tiny_megatron, mode):
    nlp = make_nlp(tiny_megatron, ner={"query_mode": mode, "window_pieces": 12, "window_overlap": 3})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    docs = [nlp.make_doc(t) for t in [LONG] + [t for t, _ in TOY]]
    n_windows = sum(len(w) for w in pipe.windows(docs))
    assert n_windows > len(docs)  # the long note has several windows
    counter = ForwardCounter(pipe.encoder)
    try:
        list(pipe.pipe(docs, batch_size=len(docs)))
        assert len(counter.calls) == 1
        assert counter.rows == n_windows * len(pipe.labels)
        # prompt ids: label index, cycling over the labels for every window
        assert counter.prompt_ids[0].tolist() == list(range(len(pipe.labels))) * n_windows
        counter.calls.clear()
        nlp.update(egs, sgd=PromptAdam(learn_rate=1e-4, prompt_learn_rate=1e-3))
        train_windows = sum(len(w) for w in pipe.windows([eg.predicted for eg in egs]))
        assert counter.calls and len(counter.calls) == 1
        assert counter.calls[0][0] == train_windows * len(pipe.labels)
    finally:
        counter.close()


def test_max_batch_rows_splits_rows_without_changing_results(tiny_megatron):
    nlp = make_nlp(tiny_megatron, ner={"query_mode": "soft", "window_pieces": 12, "threshold": 0.3, "match_threshold": 0.3})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    texts = [LONG] + [t for t, _ in TOY]
    whole = [entity_keys(d) for d in nlp.pipe(texts, batch_size=8)]
    pipe.cfg["max_batch_rows"] = 5
    counter = ForwardCounter(pipe.encoder)
    try:
        split = [entity_keys(d) for d in nlp.pipe(texts, batch_size=8)]
        assert len(counter.calls) > 1 and max(c[0] for c in counter.calls) <= 5
    finally:
        counter.close()
    assert split == whole
    alone = [entity_keys(nlp(t)) for t in texts]
    assert alone == whole


def test_training_in_row_chunks_accumulates_one_update(tiny_megatron):
    from spacy_softprompt.mrc.model import train_on_rows

    nlp = make_nlp(
        tiny_megatron, ner={"query_mode": "soft", "window_pieces": 12}, model={"freeze_backbone": True, "dropout": 0.0}
    )
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    module = module_of(nlp, "mrc_ner")
    rows = pipe._make_rows([eg.predicted for eg in egs], egs)
    rows.options = pipe._options()
    assert len(rows) > 5

    def grads(max_rows):
        module.zero_grad(set_to_none=True)
        counter = ForwardCounter(module.encoder)
        try:
            out = train_on_rows(pipe.model, rows, max_rows)
        finally:
            counter.close()
        flat = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
        return out["loss"], flat, len(counter.calls)

    loss_one, grad_one, calls_one = grads(None)
    loss_chunked, grad_chunked, calls_chunked = grads(5)
    assert calls_one == 1 and calls_chunked == -(-len(rows) // 5)
    assert loss_chunked == pytest.approx(loss_one, rel=0.1)
    assert torch.nn.functional.cosine_similarity(grad_one, grad_chunked, dim=0) > 0.95
    module.zero_grad(set_to_none=True)
    pipe.cfg["max_train_rows"] = 5
    before = module.encoder.prompt_encoder.table.detach().clone()
    nlp.update(egs, sgd=PromptAdam(learn_rate=1e-3, prompt_learn_rate=1e-2))
    assert not torch.equal(before, module.encoder.prompt_encoder.table.detach())
    assert all(p.grad is None for p in module.encoder.backbone.parameters())


def test_hard_rows_carry_the_label_question(tiny_bert):
    nlp = make_nlp(tiny_bert, ner={"query_mode": "hard", "questions": {"Drug": "which drugs", "Strength": "what strength"}})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    tok = pipe.tokenizer
    doc = nlp.make_doc(TOY[0][0])
    rows = pipe._make_rows([doc])
    assert len(rows) == 3
    for r, label in enumerate(pipe.labels):
        question = tok(pipe.question(label), add_special_tokens=False)["input_ids"]
        ids = rows.input_ids[r][rows.attention_mask[r] == 1].tolist()
        assert ids[: len(question) + 2] == [tok.cls_token_id] + question + [tok.sep_token_id]
        assert ids[-1] == tok.sep_token_id
        types = rows.token_type_ids[r][rows.attention_mask[r] == 1]
        assert types[: len(question) + 2].tolist() == [0] * (len(question) + 2)
        assert set(types[len(question) + 2 :].tolist()) == {1}
        ctx = ids[len(question) + 2 : -1]
        assert ctx == tok([t.text for t in doc], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    assert pipe.question("Frequency").startswith("Find the frequency")


def test_decoded_spans_start_and_end_on_word_boundaries(tiny_bert):
    # words the tiny vocab splits into several wordpieces
    text = "zyx aspirin qwv daily heparin kjh"
    nlp = make_nlp(tiny_bert, ner={"query_mode": "soft", "threshold": 0.002, "match_threshold": 0.05})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    doc = nlp.make_doc(text)
    pieces = tokenize_docs(pipe.tokenizer, [doc])[0]
    assert (pieces.counts > 1).sum() >= 3
    rows = pipe._make_rows([doc])
    rows.options = pipe._options()
    out = pipe.model.predict(rows)
    found = out["spans"]
    assert len(found) > 0
    r, i, j = found.T
    assert rows.start_mask[r, i].all() and rows.end_mask[r, j].all()
    # inner pieces of multi-piece words are never boundaries
    inner = (rows.word_index >= 0) & ~rows.start_mask
    assert not inner[r, i].any()
    pipe.set_annotations([doc], (rows, out))
    for span in doc.spans["entities"]:
        assert span.text == text[span.start_char : span.end_char]
        assert span.text.split()[0] in text.split() and span.text.split()[-1] in text.split()


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_training_fits_a_toy_set(tiny_megatron, mode):
    nlp, losses = _trained(tiny_megatron, mode, steps=90)
    assert losses[-1] < 0.5 * losses[0]
    predicted = [entity_keys(d) for d in nlp.pipe([t for t, _ in TOY])]
    assert predicted == gold_entities(TOY)
    for doc in nlp.pipe([TOY[0][0]]):
        assert len(doc.spans["entities"].attrs["scores"]) == len(doc.spans["entities"])
        assert [e.label_ for e in doc.ents] == ["Drug", "Strength", "Frequency"]


def test_nested_spans_of_one_type_are_learned(tiny_megatron):
    nlp, _ = _trained(tiny_megatron, "hard", steps=60, data=NESTED)
    docs = list(nlp.pipe([t for t, _ in NESTED]))
    assert [entity_keys(d) for d in docs] == gold_entities(NESTED)
    # doc.ents keeps the non-overlapping view: the longer drug span wins
    assert [(e.text, e.label_) for e in docs[0].ents] == [("insulin injection", "Drug"), ("daily", "Frequency")]


class RecordingOptimizer(PromptOptimizer):
    __slots__ = ["touched"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.touched = {}

    def __call__(self, key, weights, gradient, **kwargs):
        self.touched[key] = weights.size
        return super().__call__(key, weights, gradient, **kwargs)


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_frozen_mode_trains_only_prompts_and_heads(tiny_megatron, depth):
    P = 4
    nlp = make_nlp(tiny_megatron, ner={"query_mode": "soft"}, model={"freeze_backbone": True, "prompt_length": P, "prompt_depth": depth})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    module = module_of(nlp, "mrc_ner")
    encoder = module.encoder
    backbone_before = state_copy(encoder.backbone)
    prompt_before = encoder.prompt_encoder.table.detach().clone()
    heads_before = {k: v.clone() for k, v in module.head_state().items()}
    optimizer = RecordingOptimizer(1e-3, prompt_learn_rate=1e-2)
    for _ in range(3):
        nlp.update(egs, sgd=optimizer)
    after = encoder.backbone.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before)
    assert all(p.grad is None for p in encoder.backbone.parameters())
    assert not encoder.backbone.training
    assert not torch.equal(encoder.prompt_encoder.table.detach(), prompt_before)
    assert any(not torch.equal(heads_before[k], v) for k, v in module.head_state().items())
    H, layers, n = encoder.hidden_size, encoder.config.num_hidden_layers, len(encoder.prompt_names)
    prompt_size = n * P * (H if depth == "input" else 2 * layers * H)
    head_size = sum(p.numel() for p in module.head_parameters())
    assert sum(size for key, size in optimizer.touched.items() if is_prompt_key(key)) == prompt_size
    assert sum(optimizer.touched.values()) == prompt_size + head_size
    assert not any(k[1].startswith("encoder.backbone.") for k in optimizer.touched)
    # the span heads get PromptAdam's head_learn_rate, like thinc heads do
    heads = {k: size for k, size in optimizer.touched.items() if not is_prompt_key(k)}
    assert heads and all(is_head_key(k) for k in heads) and sum(heads.values()) == head_size


def test_unfrozen_hard_mode_moves_the_backbone(tiny_bert):
    nlp = make_nlp(tiny_bert, ner={"query_mode": "hard"}, model={"prompt_length": 0})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    encoder = module_of(nlp, "mrc_ner").encoder
    assert encoder.prompt_length == 0
    before = state_copy(encoder.backbone)
    nlp.update(egs, sgd=PromptAdam(learn_rate=1e-3, prompt_learn_rate=1e-2))
    after = encoder.backbone.state_dict()
    assert not torch.equal(before["embeddings.word_embeddings.weight"], after["embeddings.word_embeddings.weight"])


def _outputs(nlp, texts):
    pipe = nlp.get_pipe("mrc_ner")
    docs = [nlp.make_doc(t) for t in texts]
    rows = pipe._make_rows(docs)
    rows.options = {**pipe._options(), "threshold": 0.2, "match_threshold": 0.2}
    return pipe.model.predict(rows), [entity_keys(d) for d in nlp.pipe(texts)]


@pytest.mark.parametrize("frozen", [False, True])
def test_to_disk_from_disk_round_trip(tiny_megatron, tmp_path, frozen):
    nlp = make_nlp(
        tiny_megatron,
        ner={"query_mode": "soft", "threshold": 0.3},
        model={"freeze_backbone": frozen, "save_backbone": not frozen},
    )
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    optimizer = PromptAdam(learn_rate=1e-3, prompt_learn_rate=1e-2)
    for _ in range(3):
        nlp.update(egs, sgd=optimizer)
    texts = [t for t, _ in TOY] + [LONG]
    before, ents_before = _outputs(nlp, texts)
    nlp.to_disk(tmp_path / "pipeline")
    size = sum(p.stat().st_size for p in (tmp_path / "pipeline").rglob("*") if p.is_file())
    backbone_bytes = sum(v.numel() * v.element_size() for v in module_of(nlp, "mrc_ner").encoder.backbone.state_dict().values())
    assert (size < backbone_bytes) == frozen  # prompt-only save leaves the backbone out
    loaded = spacy.load(tmp_path / "pipeline")
    after, ents_after = _outputs(loaded, texts)
    numpy.testing.assert_array_equal(before["spans"], after["spans"])
    numpy.testing.assert_allclose(before["probs"], after["probs"], rtol=1e-5, atol=1e-6)
    assert ents_before == ents_after
    pipe = loaded.get_pipe("mrc_ner")
    assert isinstance(pipe, MRCEntityRecognizer) and pipe.labels == nlp.get_pipe("mrc_ner").labels
    assert pipe.encoder.backbone_frozen == frozen
    # bytes round trip as well
    again = make_nlp(
        tiny_megatron, ner={"query_mode": "soft", "threshold": 0.3}, model={"freeze_backbone": frozen, "save_backbone": not frozen}
    )
    again.get_pipe("mrc_ner").from_bytes(nlp.get_pipe("mrc_ner").to_bytes())
    assert _outputs(again, texts)[1] == ents_before


def test_query_tokenization_is_cut(tiny_bert):
    nlp = make_nlp(tiny_bert, ner={"query_mode": "hard"})
    nlp.initialize(lambda: examples(nlp, with_relations=False))
    ids = tokenize_queries(nlp.get_pipe("mrc_ner").tokenizer, ["aspirin " * 100], 7)
    assert len(ids[0]) == 7


def test_empty_and_whitespace_docs(tiny_bert):
    nlp = make_nlp(tiny_bert, ner={"query_mode": "soft"})
    nlp.initialize(lambda: examples(nlp, with_relations=False))
    docs = list(nlp.pipe(["", "   ", "aspirin"]))
    assert [len(d.spans["entities"]) >= 0 for d in docs] == [True, True, True]
    assert len(docs[0].ents) == 0


def test_truncated_mrc_model_file_is_a_corrupt_model_error(tiny_megatron, tmp_path):
    from spacy_softprompt.encoder import CorruptModelError

    nlp = make_nlp(tiny_megatron, ner={"query_mode": "soft"})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    nlp.to_disk(tmp_path / "pipeline")
    model_file = tmp_path / "pipeline" / "mrc_ner" / "model"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match=r"'mrc_ner' saved data \(.* bytes\) is corrupt or truncated"):
        spacy.load(tmp_path / "pipeline")


def test_boundary_heads_start_at_the_prior_and_loss_weights_are_checked(tiny_megatron):
    from spacy_softprompt.mrc.model import BOUNDARY_PRIOR

    nlp = make_nlp(tiny_megatron, ner={"query_mode": "soft"})
    nlp.initialize(lambda: examples(nlp, TOY, with_relations=False))
    module = module_of(nlp, "mrc_ner")
    for head in (module.start_head, module.end_head):
        assert torch.sigmoid(head.bias).item() == pytest.approx(BOUNDARY_PRIOR, rel=1e-4)
    with pytest.raises(ValueError, match="unknown loss_weights"):
        make_nlp(tiny_megatron, ner={"query_mode": "soft", "loss_weights": {"postive": 2.0}})
    with pytest.raises(ValueError, match="must not be negative"):
        make_nlp(tiny_megatron, ner={"query_mode": "soft", "loss_weights": {"positive": -1.0}})


def test_get_loss_reads_the_training_output_without_a_second_forward(tiny_megatron):
    nlp = make_nlp(tiny_megatron, ner={"query_mode": "soft"}, model={"dropout": 0.0})
    egs = examples(nlp, with_relations=False)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_ner")
    rows = pipe._make_rows([eg.predicted for eg in egs], egs)
    rows.options = pipe._options()
    out, _ = pipe.model.begin_update(rows)
    counter = ForwardCounter(module_of(nlp, "mrc_ner").encoder)
    try:
        loss, gradient = pipe.get_loss(egs, out)
    finally:
        counter.close()
    assert (loss, gradient) == (out["loss"], None) and counter.calls == []
    with pytest.raises(ValueError, match="training output"):
        pipe.get_loss(egs, pipe.predict([eg.predicted for eg in egs]))
