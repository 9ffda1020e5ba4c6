"""The architecture inside spaCy pipelines: transformer pipe, listeners, training."""
import numpy
import pytest
import torch

from spacy_softprompt.encoder import SoftPromptTransformerModel
from spacy_softprompt.optimizers import PromptAdam, PromptOptimizer, is_prompt_key

from encoder_helpers import TEXTS, encoder_of, hidden, initialize, make_nlp, state_copy


class RecordingOptimizer(PromptOptimizer):
    """Remembers the size of every parameter it updated."""

    __slots__ = ["touched"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.touched = {}

    def __call__(self, key, weights, gradient, **kwargs):
        self.touched[key] = weights.size
        return super().__call__(key, weights, gradient, **kwargs)


def _docs(nlp, texts=TEXTS, prompts=None):
    docs = [nlp.make_doc(t) for t in texts]
    for doc, prompt in zip(docs, prompts or [None] * len(docs)):
        doc._.prompt = prompt
    return docs


def test_p0_pipe_equals_transformer_model_v3(tiny_model):
    ours = make_nlp(tiny_model, prompt_length=0)
    theirs = make_nlp(tiny_model, arch="spacy-transformers.TransformerModel.v3")
    ours.initialize()
    theirs.initialize()
    assert isinstance(ours.get_pipe("transformer").model, SoftPromptTransformerModel)
    text = " ".join(TEXTS * 3)  # several strided windows
    for a, b in zip(ours.pipe([text] + TEXTS), theirs.pipe([text] + TEXTS)):
        assert hidden(a).shape == hidden(b).shape
        assert numpy.array_equal(hidden(a), hidden(b))
        assert numpy.array_equal(a._.trf_data.align.data, b._.trf_data.align.data)


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_frozen_training_moves_only_the_prompt_and_heads(tiny_model, depth):
    P = 6
    nlp = make_nlp(tiny_model, ner=True, prompt_length=P, prompt_depth=depth, freeze_backbone=True)
    egs = initialize(nlp)
    encoder = encoder_of(nlp)
    backbone_before = state_copy(encoder.backbone)
    prompt_before = encoder.prompt_encoder.table.detach().clone()
    optimizer = RecordingOptimizer(1e-3, prompt_learn_rate=1e-2)
    touched = optimizer.touched
    for _ in range(3):
        nlp.update(egs, sgd=optimizer)
    after = encoder.backbone.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before)
    assert all(p.grad is None for p in encoder.backbone.parameters())
    assert not torch.equal(encoder.prompt_encoder.table.detach(), prompt_before)
    H, layers = encoder.hidden_size, encoder.config.num_hidden_layers
    prompt_size = P * H if depth == "input" else P * 2 * layers * H
    assert encoder.num_trainable_parameters() == prompt_size
    ner_model = nlp.get_pipe("ner").model
    head_size = sum(
        node.get_param(name).size for node in ner_model.walk() for name in node.param_names if node.has_param(name)
    )
    assert sum(size for key, size in touched.items() if is_prompt_key(key)) == prompt_size
    assert sum(touched.values()) == prompt_size + head_size
    assert not any(isinstance(k[1], str) and k[1].startswith("backbone.") for k in optimizer.mom1)
    with nlp.use_params(optimizer.averages):
        nlp(TEXTS[0])


def test_unfrozen_training_moves_the_backbone(tiny_bert):
    nlp = make_nlp(tiny_bert, ner=True, prompt_length=4)
    egs = initialize(nlp)
    encoder = encoder_of(nlp)
    before = state_copy(encoder.backbone)
    optimizer = PromptAdam(learn_rate=1e-3, prompt_learn_rate=1e-2)
    # spaCy 3.7 runs finish_update right after each component's update, so the
    # transformer's gradient (from the listener) is applied at the next step
    for _ in range(2):
        nlp.update(egs, sgd=optimizer)
    after = encoder.backbone.state_dict()
    assert not torch.equal(before["embeddings.word_embeddings.weight"], after["embeddings.word_embeddings.weight"])
    assert encoder.backbone.training or not encoder.training


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_doc_alone_equals_padded_batch_and_mixed_prompt_batches(tiny_megatron, depth):
    nlp = make_nlp(tiny_megatron, prompt_length=5, prompt_depth=depth, prompt_names=["a", "b"])
    nlp.initialize()
    pipe = nlp.get_pipe("transformer")
    prompts = ["a", "b", None, "b"]
    batch = list(pipe.pipe(_docs(nlp, prompts=prompts), batch_size=8))
    for doc, text, prompt in zip(batch, TEXTS, prompts):
        alone = pipe(_docs(nlp, [text], [prompt])[0])
        width = hidden(alone).shape[1]
        numpy.testing.assert_allclose(hidden(doc)[:, :width], hidden(alone), atol=1e-5)
    for prompt in ("a", "b"):
        same = list(pipe.pipe(_docs(nlp, prompts=[prompt] * 4), batch_size=8))
        for doc, other, p in zip(batch, same, prompts):
            if (p or "a") == prompt:
                numpy.testing.assert_allclose(hidden(doc), hidden(other), atol=1e-5)
    a = hidden(pipe(_docs(nlp, TEXTS[:1], ["a"])[0]))
    b = hidden(pipe(_docs(nlp, TEXTS[:1], ["b"])[0]))
    assert not numpy.allclose(a, b, atol=1e-3)
    by_index = hidden(pipe(_docs(nlp, TEXTS[:1], [1])[0]))
    numpy.testing.assert_array_equal(by_index, b)


def test_unknown_prompt_name_is_a_clear_error(tiny_bert):
    nlp = make_nlp(tiny_bert, prompt_length=2, prompt_names=["a", "b"])
    nlp.initialize()
    doc = _docs(nlp, TEXTS[:1], ["zzz"])[0]
    with pytest.raises(ValueError, match="prompt_names"):
        nlp.get_pipe("transformer")(doc)


def _long_note(tokenizer, target=2000):
    words = ["patient", "aspirin", "xq7", "mg/kg", "warfarin", "zzyx", "bid", "(", "tid", ")"]
    out = []
    while len(tokenizer(" ".join(out), add_special_tokens=False)["input_ids"]) < target:
        out.extend(words)
    return " ".join(out)


@pytest.mark.parametrize("depth", ["input", "deep"])
def test_long_note_respects_the_reduced_window(tiny_megatron, depth):
    P = 20
    nlp = make_nlp(tiny_megatron, ner=True, prompt_length=P, prompt_depth=depth, window=80, stride=60)
    initialize(nlp)
    model = nlp.get_pipe("transformer").model
    encoder = model.encoder
    max_pos = encoder.config.max_position_embeddings
    assert model.max_text_length == max_pos - P
    lengths = []

    def spy(module, args, kwargs):
        ids = kwargs.get("input_ids")
        embeds = kwargs.get("inputs_embeds")
        seq = (embeds.shape[1] if embeds is not None else ids.shape[1])
        past = kwargs.get("past_key_values")
        keys = seq + (past[0][0].shape[2] if past else 0)
        lengths.append((seq, keys, int(kwargs["position_ids"].max()) if kwargs.get("position_ids") is not None else -1))

    handle = encoder.backbone.register_forward_pre_hook(spy, with_kwargs=True)
    note = _long_note(model.tokenizer)
    assert len(model.tokenizer(note)["input_ids"]) >= 2000
    docs = list(nlp.pipe([note, TEXTS[0], note[:3000]], batch_size=3))
    handle.remove()
    assert lengths
    for seq, keys, top_position in lengths:
        assert seq <= max_pos and keys <= max_pos and top_position < max_pos
    for doc in docs:
        assert doc._.trf_data.wordpieces.input_ids.shape[1] <= max_pos - P
        assert hidden(doc).shape[1] == doc._.trf_data.wordpieces.input_ids.shape[1]


def test_window_too_long_is_a_config_error(tiny_megatron):
    nlp = make_nlp(tiny_megatron, prompt_length=20, window=120, stride=100)
    with pytest.raises(ValueError, match="window = 120"):
        nlp.initialize()


def test_hard_prompt_is_stripped_before_alignment(tiny_model):
    nlp = make_nlp(tiny_model, ner=True, prompt_length=3, hard_prompt="find the drugs")
    initialize(nlp)
    plain = make_nlp(tiny_model, prompt_length=3)
    plain.initialize()
    model = nlp.get_pipe("transformer").model
    tokenizer = model.tokenizer
    K = model.encoder.hard_prompt_length
    assert K == len(tokenizer("find the drugs", add_special_tokens=False)["input_ids"]) + 1
    assert model.max_text_length == model.encoder.config.max_position_embeddings - 3 - K
    for text in TEXTS:
        doc = nlp(text)
        n_wordpieces = len(tokenizer(text)["input_ids"])
        assert hidden(doc).shape[:2] == (1, n_wordpieces)
        assert doc._.trf_data.wordpieces.lengths == [n_wordpieces]
        # every listener row is a text wordpiece: the tok2vec output covers the doc's tokens
        tok2vec = nlp.get_pipe("ner").model.get_ref("tok2vec")
        vectors = tok2vec.predict([doc])
        assert vectors.shape[0] == len(doc)
        assert not numpy.allclose(hidden(doc), hidden(plain(text)), atol=1e-3)


def test_replace_listeners_uses_our_tok2vec_architecture(tiny_bert, tmp_path):
    import spacy

    nlp = make_nlp(tiny_bert, ner=True, prompt_length=3, freeze_backbone=True)
    egs = initialize(nlp)
    nlp.update(egs, sgd=PromptAdam(learn_rate=1e-3, prompt_learn_rate=1e-2))
    before = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(TEXTS)]
    nlp.replace_listeners("transformer", "ner", ["model.tok2vec"])
    cfg = nlp.config["components"]["ner"]["model"]["tok2vec"]
    assert cfg["@architectures"] == "spacy_softprompt.SoftPromptTok2VecTransformer.v1"
    assert cfg["prompt_length"] == 3 and "pooling" in cfg
    (copied,) = [n for n in nlp.get_pipe("ner").model.walk() if isinstance(n, SoftPromptTransformerModel)]
    assert copied.shim.id != nlp.get_pipe("transformer").model.shim.id
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(TEXTS)] == before
    nlp.to_disk(tmp_path / "replaced")
    loaded = spacy.load(tmp_path / "replaced")
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in loaded.pipe(TEXTS)] == before
