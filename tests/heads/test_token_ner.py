"""token_ner: a tiny transformer -> token_ner -> relation_extractor pipeline learns the
toy entities, masks misaligned gold, saves and reloads, and batches like single docs."""
import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example

import spacy_softprompt  # noqa: F401  (registers token_ner and its architecture)
from spacy_softprompt.annotations import get_entities, get_relations, set_entities
from spacy_softprompt.heads.token_ner import MISSING
from spacy_softprompt.testing import toy_docs

N_STEPS = 25


def _nlp(model_path, with_relations=True):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "transformer",
        config={
            "model": {
                "@architectures": "spacy-transformers.TransformerModel.v3",
                "name": str(model_path),
                "tokenizer_config": {"use_fast": True},
                "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 64, "stride": 48},
            }
        },
    )
    nlp.add_pipe("token_ner")
    if with_relations:
        nlp.add_pipe("relation_extractor", config={"threshold": 0.3})
    return nlp


def _ents(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def _rels(doc):
    return sorted((r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in get_relations(doc))


@pytest.fixture(scope="module")
def trained(tiny_bert):
    nlp = _nlp(tiny_bert)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    optimizer.learn_rate = 0.01
    losses = [nlp.update(examples, sgd=optimizer, losses={})["token_ner"] for _ in range(N_STEPS)]
    return nlp, examples, losses


def test_initialize_takes_labels_from_the_data(trained):
    nlp, _, _ = trained
    ner = nlp.get_pipe("token_ner")
    assert ner.labels == ("Drug", "Frequency", "Strength")
    assert ner.model.get_ref("output_layer").get_dim("nO") == 1 + 4 * 3
    with pytest.raises(ValueError):
        ner.add_label("Route")


def test_overfits_the_toy_docs(trained):
    nlp, examples, losses = trained
    assert losses[-1] < losses[0] * 0.1
    for eg in examples:
        doc = nlp(eg.reference.text)
        assert _ents(doc) == _ents(eg.reference)
        assert [(s.start, s.end, s.label_) for s in doc.spans["entities"]] == [(s.start, s.end, s.label_) for s in doc.ents]
        assert _rels(doc) == _rels(eg.reference)  # the relation extractor reads these entities
    scores = nlp.evaluate(examples)
    assert scores["ents_strict_f"] == 1.0 and scores["rels_strict_f"] == 1.0


def test_pipe_in_batches_equals_one_by_one(trained):
    nlp, examples, _ = trained
    texts = [eg.reference.text for eg in examples] + ["", "aspirin daily", "heparin 5 ml twice"]
    batched = [_ents(doc) for doc in nlp.pipe(texts, batch_size=8)]
    single = [_ents(nlp(text)) for text in texts]
    assert batched == single
    assert batched[3] == [] and any(batched)


def test_round_trip_gives_identical_predictions(trained, tmp_path):
    nlp, examples, _ = trained
    nlp.to_disk(tmp_path / "m")
    nlp2 = spacy.load(tmp_path / "m")
    ner1, ner2 = nlp.get_pipe("token_ner"), nlp2.get_pipe("token_ner")
    assert ner2.labels == ner1.labels and ner2.cfg == ner1.cfg
    texts = [eg.reference.text for eg in examples] + ["warfarin 10 mg twice for fever"]
    for doc1, doc2 in zip(nlp.pipe(texts), nlp2.pipe(texts)):
        assert _ents(doc1) == _ents(doc2)
        assert doc1._.relations == doc2._.relations
    docs1 = list(nlp.pipe(texts, disable=["token_ner", "relation_extractor"]))
    docs2 = list(nlp2.pipe(texts, disable=["token_ner", "relation_extractor"]))
    scores1, scores2 = ner1.model.predict(docs1), ner2.model.predict(docs2)
    assert scores1[-1].shape == (len(docs1[-1]), 13)
    for a, b in zip(scores1, scores2):
        numpy.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_misaligned_gold_tokens_are_masked_not_labelled_outside(trained):
    nlp, _, _ = trained
    ner = nlp.get_pipe("token_ner")
    # gold splits "aspirin10" into two entities; the predicted tokenizer keeps one token
    ref = Doc(nlp.vocab, words=["aspirin", "10", "mg", "daily", "."], spaces=[False, True, True, False, False])
    set_entities(ref, [ref.char_span(0, 7, label="Drug"), ref.char_span(7, 12, label="Strength"), ref.char_span(13, 18, label="Frequency")])
    pred = nlp.make_doc(ref.text)
    assert [t.text for t in pred] == ["aspirin10", "mg", "daily", "."]
    eg = Example(pred, ref)
    tags = ner.gold_tags(eg)
    names = ner.tag_names
    assert tags[0] == MISSING and tags[1] == MISSING  # neither entity aligns to whole predicted tokens
    assert names[tags[2]] == "U-Frequency" and names[tags[3]] == "O"
    # masked tokens get no gradient; the loss averages over the tagged ones only
    K = len(names)
    scores = [numpy.random.RandomState(0).normal(size=(len(pred), K)).astype("f")]
    loss, d_scores = ner.get_loss([eg], scores)
    assert not d_scores[0][:2].any() and d_scores[0][2:].any()
    logp = scores[0] - numpy.log(numpy.exp(scores[0]).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-(logp[2, tags[2]] + logp[3, tags[3]]) / 2, rel=1e-5)


def test_entities_feed_the_relation_extractor_and_stale_groups_are_replaced(trained):
    nlp, examples, _ = trained
    text = examples[0].reference.text
    doc = nlp.make_doc(text)
    doc.spans["entities"] = [doc[0:1]]  # stale group, e.g. from an earlier component
    for name, proc in nlp.pipeline:
        doc = proc(doc)
    assert [(e.start_char, e.end_char, e.label_) for e in get_entities(doc)] == _ents(examples[0].reference)


def test_spans_key_null_sets_doc_ents_only(tiny_bert):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {"@architectures": "spacy-transformers.TransformerModel.v3", "name": str(tiny_bert)}})
    nlp.add_pipe("token_ner", config={"spans_key": None})
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    doc = nlp("aspirin 10 mg daily")
    assert "entities" not in doc.spans


@pytest.mark.parametrize("hidden_width", [0, 8])
def test_model_scores_every_token_with_or_without_hidden_layer(hidden_width):
    from thinc.api import Model

    from spacy_softprompt.heads.token_ner_model import create_token_ner_model_v1

    def forward(model, docs, is_train):
        vecs = [model.ops.asarray2f(numpy.random.RandomState(len(doc)).normal(size=(len(doc), 6))) for doc in docs]
        return vecs, lambda d_vecs: []

    model = create_token_ner_model_v1(Model("fixed", forward, dims={"nO": 6}), hidden_width=hidden_width, dropout=0.0)
    model.get_ref("output_layer").set_dim("nO", 9)
    nlp = spacy.blank("en")
    docs = [nlp.make_doc("aspirin 10 mg daily"), nlp.make_doc(""), nlp.make_doc("heparin")]
    model.initialize(X=docs)
    scores = model.predict(docs)
    assert [s.shape for s in scores] == [(4, 9), (0, 9), (1, 9)]
    assert len([n for n in model.walk() if n.name == "relu"]) == (1 if hidden_width else 0)
