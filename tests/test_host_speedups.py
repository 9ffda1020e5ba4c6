"""The inference speed-ups give the outputs of the code they replace.

A tiny soft-prompt pipeline (deep prompt, token_ner + relation_extractor,
trained a few steps) annotates notes of varied length twice: with the
optimised stages, and with each stage put back to the old code path
(encoder rows in order and padded; wordpieces through spacy-transformers'
``huggingface_tokenize`` + ``WordpieceBatch.from_batch_encoding``; each head
pooling for itself).  Entities, relations, wordpieces and alignment must be
identical, hidden states and pooled vectors equal at every real position.
"""
import numpy
import pytest
import spacy
from spacy.training import Example
from spacy_transformers.data_classes import WordpieceBatch
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from spacy_transformers.layers.trfs2arrays import forward as trfs2arrays_forward

import spacy_softprompt  # noqa: F401
from spacy_softprompt.annotations import get_relations
from spacy_softprompt.encoder import layer as encoder_layer
from spacy_softprompt.heads.listener import POOLED_CACHE_ATTR
from spacy_softprompt.testing import toy_docs

ATOL = 1e-5


def _old_wordpieces(tokenizer, texts):
    encoding = huggingface_tokenize(tokenizer, list(texts))
    return encoding, WordpieceBatch.from_batch_encoding(encoding)


@pytest.fixture(scope="module")
def trained(tiny_bert):
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


def _heads_tok2vec(nlp):
    return [nlp.get_pipe(name).model.get_ref("tok2vec") for name in ("token_ner", "relation_extractor")]


def _annotate(nlp, texts):
    docs = list(nlp.pipe(texts, batch_size=4))
    ents = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in docs]
    rels = [sorted((r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in get_relations(doc)) for doc in docs]
    return docs, ents, rels


def _old_paths(nlp, monkeypatch):
    encoder = nlp.get_pipe("transformer").model.encoder
    monkeypatch.setattr(encoder, "forward", encoder._forward_in_row_chunks)
    monkeypatch.setattr(encoder_layer, "wordpiece_batch", _old_wordpieces)
    for tok2vec in _heads_tok2vec(nlp):
        for node in tok2vec.walk():
            if node.name == "trfs2arrays":
                monkeypatch.setattr(node, "_func", trfs2arrays_forward)


def test_optimised_inference_gives_the_old_outputs(trained, monkeypatch):
    nlp, texts = trained
    new_docs, new_ents, new_rels = _annotate(nlp, texts)
    with monkeypatch.context() as patch:
        _old_paths(nlp, patch)
        old_docs, old_ents, old_rels = _annotate(nlp, texts)
    assert new_ents == old_ents and new_rels == old_rels
    assert sum(map(len, new_ents)) > 0 and sum(map(len, new_rels)) > 0  # the comparison covers both heads
    for new, old in zip(new_docs, old_docs):
        if not len(new):
            continue
        a, b = new._.trf_data, old._.trf_data
        assert a.wordpieces.strings == b.wordpieces.strings and a.wordpieces.lengths == b.wordpieces.lengths
        numpy.testing.assert_array_equal(a.wordpieces.input_ids, b.wordpieces.input_ids)
        numpy.testing.assert_array_equal(a.align.dataXd, b.align.dataXd)
        real = numpy.asarray(a.wordpieces.attention_mask, dtype=bool)
        new_hidden = a.model_output.last_hidden_state
        old_hidden = b.model_output.last_hidden_state
        numpy.testing.assert_allclose(new_hidden[real], old_hidden[real], atol=ATOL, rtol=0)


def test_heads_pool_each_document_once(trained):
    nlp, texts = trained
    ner_tok2vec, rel_tok2vec = _heads_tok2vec(nlp)
    docs = list(nlp.get_pipe("transformer").pipe(nlp.pipe(texts[:3], disable=["token_ner", "relation_extractor"])))
    first = ner_tok2vec.predict(docs)
    assert all(getattr(doc._.trf_data, POOLED_CACHE_ATTR)["reduce_mean"] is vecs for doc, vecs in zip(docs, first))
    second = rel_tok2vec.predict(docs)
    assert all(a is b for a, b in zip(first, second))  # read from the cache, not pooled again
    with pytest.MonkeyPatch.context() as patch:  # the cached vectors are those a fresh pooling gives
        for node in ner_tok2vec.walk():
            if node.name == "trfs2arrays":
                patch.setattr(node, "_func", trfs2arrays_forward)
        fresh = ner_tok2vec.predict(docs)
    for a, b in zip(first, fresh):
        numpy.testing.assert_array_equal(a, b)
    training, _ = ner_tok2vec.begin_update(docs)  # training pools afresh (its own gradients)
    assert all(a is not b for a, b in zip(training, first))


def test_decoding_on_the_host_gives_the_per_doc_padding_result(trained):
    """token_ner copies the batch's scores once and decodes on the host; the result
    equals padding each Doc's scores into the batch one by one (the old code)."""
    from spacy_softprompt.heads.biluo_decoding import n_tags, path_spans, viterbi

    nlp, texts = trained
    ner = nlp.get_pipe("token_ner")
    docs = list(nlp.pipe(texts, disable=["token_ner", "relation_extractor"]))
    scores = ner.model.predict(docs)
    assert any(s.shape[0] == 0 for s in scores) and len({s.shape[0] for s in scores}) > 3
    lengths = numpy.asarray([s.shape[0] for s in scores], dtype="int32")
    padded = numpy.zeros((len(scores), int(lengths.max()), n_tags(len(ner.labels))), dtype="float32")
    for i, doc_scores in enumerate(scores):
        if lengths[i]:
            padded[i, : lengths[i]] = doc_scores
    expected = path_spans(viterbi(padded, lengths), lengths)
    numpy.testing.assert_array_equal(ner.decode(scores), expected)
    assert len(expected) > 0
