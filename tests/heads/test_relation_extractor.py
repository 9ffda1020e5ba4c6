"""The relation extractor learns typed, directed relations end to end on a tiny encoder."""
import numpy
import pytest
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example

import spacy_softprompt  # noqa: F401  (registers the Doc extensions)
from spacy_softprompt.annotations import get_relations, make_relation, set_entities
from spacy_softprompt.heads.relation_model import distance_buckets

TEXTS = [
    ("aspirin 10 mg daily for fever", [("Drug", "aspirin"), ("Strength", "10 mg"), ("Frequency", "daily")]),
    ("heparin 5 ml twice after surgery", [("Drug", "heparin"), ("Strength", "5 ml"), ("Frequency", "twice")]),
]


def _gold_doc(nlp, text, ents):
    doc = nlp.make_doc(text)
    spans = []
    for label, surface in ents:
        start = text.index(surface)
        spans.append(doc.char_span(start, start + len(surface), label=label))
    set_entities(doc, spans)
    drug = spans[0]
    doc._.relations = [make_relation(f"{s.label_}-Drug", s, drug) for s in spans[1:]]
    return doc


def _nlp(model_path, with_ner=True):
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
    nlp.add_pipe("relation_extractor", config={"scorer": None, "threshold": 0.3})
    return nlp


@pytest.fixture(scope="module")
def trained(tiny_bert):
    nlp = _nlp(tiny_bert)
    examples = [Example(nlp.make_doc(t), _gold_doc(nlp, t, e)) for t, e in TEXTS]
    nlp.initialize(lambda: examples)
    optimizer = nlp.create_optimizer()
    optimizer.learn_rate = 0.01
    losses = []
    for _ in range(40):
        l = nlp.update(examples, sgd=optimizer, losses={})
        losses.append(l["relation_extractor"])
    return nlp, examples, losses


def test_training_dropout_changes_the_training_forward_and_not_inference(tiny_bert):
    nlp = _nlp(tiny_bert)
    examples = [Example(nlp.make_doc(t), _gold_doc(nlp, t, e)) for t, e in TEXTS]
    nlp.initialize(lambda: examples)
    transformer, rel = nlp.get_pipe("transformer"), nlp.get_pipe("relation_extractor")
    output = rel.model.get_ref("output_layer")  # thinc starts it at zero: every input would score 1/3
    output.set_param("W", numpy.random.RandomState(0).normal(size=output.get_param("W").shape).astype("f"))
    for eg in examples:  # fixed transformer output: the listener reads doc._.trf_data
        transformer(eg.predicted)
    docs = [eg.predicted for eg in examples]
    pairs = [rel._pair_array(rel._gold_pairs(eg)[0]) for eg in examples]
    before = rel.model.predict((docs, pairs))
    # no optimizer step: the weights stay, only the forward's dropout differs
    without = [rel.learn(examples, drop=0.0) for _ in range(2)]
    assert without[0] == without[1]  # drop 0: deterministic, whatever the model's own setting
    with_dropout = [rel.learn(examples, drop=0.5) for _ in range(3)]
    assert all(loss != without[0] for loss in with_dropout) and len(set(with_dropout)) > 1
    numpy.testing.assert_array_equal(rel.model.predict((docs, pairs)), before)  # inference: no dropout


def test_initialize_learns_labels_and_type_pairs(trained):
    nlp, _, _ = trained
    rel = nlp.get_pipe("relation_extractor")
    assert set(rel.labels) == {"Strength-Drug", "Frequency-Drug"}
    assert rel.cfg["allowed_pairs"]["Strength-Drug"] == [["Strength", "Drug"]]
    assert rel.cfg["max_token_distance"] >= 3


def test_loss_decreases_and_predictions_match_gold(trained):
    nlp, examples, losses = trained
    assert losses[-1] < losses[0] * 0.5
    for eg in examples:
        doc = nlp.make_doc(eg.reference.text)
        set_entities(doc, [doc.char_span(e.start_char, e.end_char, label=e.label_) for e in eg.reference.ents])
        doc = nlp.get_pipe("transformer")(doc)
        doc = nlp.get_pipe("relation_extractor")(doc)
        got = {(r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in get_relations(doc)}
        want = {(r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in get_relations(eg.reference)}
        assert got == want


def test_candidates_respect_types_and_direction(trained):
    nlp, examples, _ = trained
    rel = nlp.get_pipe("relation_extractor")
    ref = examples[0].reference
    pairs = rel.candidates(list(ref.ents))
    labels = {(a.label_, b.label_) for a, b in pairs}
    assert labels == {("Strength", "Drug"), ("Frequency", "Drug")}


def test_relations_survive_docbin_and_serialization(trained, tmp_path):
    nlp, examples, _ = trained
    doc = nlp(examples[0].reference.text)  # no NER: no entities, no relations
    assert get_relations(doc) == []
    ref = examples[0].reference
    db = DocBin(store_user_data=True, docs=[ref])
    back = list(DocBin().from_bytes(db.to_bytes()).get_docs(nlp.vocab))[0]
    assert get_relations(back) == get_relations(ref)
    nlp.to_disk(tmp_path / "m")
    nlp2 = spacy.load(tmp_path / "m")
    cfg1, cfg2 = dict(nlp.get_pipe("relation_extractor").cfg), dict(nlp2.get_pipe("relation_extractor").cfg)
    assert cfg2.pop("threshold") == pytest.approx(cfg1.pop("threshold"))
    assert cfg2 == cfg1
    text = examples[0].reference.text
    doc1, doc2 = nlp.make_doc(text), nlp2.make_doc(text)
    for d in (doc1, doc2):
        set_entities(d, [d.char_span(e.start_char, e.end_char, label=e.label_) for e in examples[0].reference.ents])
    out1 = nlp.get_pipe("relation_extractor")(nlp.get_pipe("transformer")(doc1))
    out2 = nlp2.get_pipe("relation_extractor")(nlp2.get_pipe("transformer")(doc2))
    assert get_relations(out1) == get_relations(out2) != []


def test_gradient_of_pair_pooling_matches_finite_differences(tiny_bert):
    from thinc.api import Model, chain, reduce_sum, list2array
    from spacy_softprompt.heads.relation_model import pair_representation

    vecs = numpy.random.RandomState(0).normal(size=(6, 3)).astype("f")
    tok2vec = Model("fixed", lambda m, X, is_train: ([vecs.copy() for _ in X], lambda d: d), dims={"nO": 3})
    layer = pair_representation(tok2vec, distance_width=2)
    pairs = numpy.asarray([[0, 2, 3, 5], [4, 6, 1, 2]], dtype="i")
    layer.initialize(X=([None], [pairs]))
    out, backprop = layer(([None], [pairs]), is_train=True)
    d_out = numpy.random.RandomState(1).normal(size=out.shape).astype("f")
    (d_vecs,) = backprop(d_out)
    # Numerical gradient of sum(out * d_out) w.r.t. the token vectors.
    eps = 1e-3
    num = numpy.zeros_like(vecs)
    for i in range(vecs.shape[0]):
        for j in range(vecs.shape[1]):
            for sign in (1, -1):
                vecs[i, j] += sign * eps
                o, _ = layer(([None], [pairs]), is_train=False)
                num[i, j] += sign * float((o * d_out).sum()) / (2 * eps)
                vecs[i, j] -= sign * eps
    numpy.testing.assert_allclose(d_vecs, num, rtol=1e-2, atol=1e-3)


def test_distance_buckets_are_directional():
    pairs = numpy.asarray([[0, 1, 1, 2], [1, 2, 0, 1], [0, 1, 100, 101]], dtype="i")
    b = distance_buckets(pairs)
    assert b[0] != b[1]
    assert b[2] > b[0]


def test_candidate_scan_equals_brute_force(trained):
    import random

    nlp, _, _ = trained
    rel = nlp.get_pipe("relation_extractor")
    doc = nlp.make_doc(" ".join(f"w{i}" for i in range(300)))
    rng = random.Random(0)
    spans = []
    for _ in range(60):
        start = rng.randrange(0, 295)
        spans.append(doc[start : start + rng.randrange(1, 5)])
        spans[-1].label_ = rng.choice(["Drug", "Strength", "Frequency"])
    spans = [doc.char_span(s.start_char, s.end_char, label=s.label_) for s in spans]
    max_dist = rel.cfg["max_token_distance"]
    allowed = {tuple(p) for ps in rel.cfg["allowed_pairs"].values() for p in ps}
    brute = {
        (a.start, a.end, a.label_, b.start, b.end, b.label_)
        for a in spans
        for b in spans
        if (a.start, a.end, a.label_) != (b.start, b.end, b.label_)
        and (a.label_, b.label_) in allowed
        and max(0, b.start - a.end, a.start - b.end) <= max_dist
    }
    got = [(a.start, a.end, a.label_, b.start, b.end, b.label_) for a, b in rel.candidates(spans)]
    assert set(got) == brute and len(brute) > 20


def _loop_candidates(rel, entities):
    """The per-pair reference rule: sorted entities, (a, b) before (b, a)."""
    allowed = {tuple(p) for ps in rel.cfg["allowed_pairs"].values() for p in ps}
    ents = sorted(entities, key=lambda s: (s.start, s.end, s.label_))
    out = []
    for i, a in enumerate(ents):
        for b in ents[i + 1 :]:
            if b.start - a.end > rel.cfg["max_token_distance"]:
                break
            if (a.start, a.end, a.label_) == (b.start, b.end, b.label_):
                continue
            out += [(a, b)] * ((a.label_, b.label_) in allowed) + [(b, a)] * ((b.label_, a.label_) in allowed)
    return out


def test_candidate_order_and_annotations_follow_the_per_pair_rule(trained):
    import random

    nlp, _, _ = trained
    rel = nlp.get_pipe("relation_extractor")
    doc = nlp.make_doc(" ".join(f"w{i}" for i in range(200)))
    rng = random.Random(1)
    spans = []
    for _ in range(50):
        start = rng.randrange(0, 195)
        spans.append(doc.char_span(doc[start].idx, doc[start + rng.randrange(0, 4)].idx + 2,
                                   label=rng.choice(["Drug", "Strength", "Frequency", "Unseen"]), alignment_mode="expand"))
    spans += spans[:3]  # duplicates never pair with themselves
    key = lambda pairs: [(a.start, a.end, a.label_, b.start, b.end, b.label_) for a, b in pairs]  # noqa: E731
    pairs = rel.candidates(spans)
    assert key(pairs) == key(_loop_candidates(rel, spans)) and len(pairs) > 20
    # set_annotations: best label if it beats "no relation", reaches the threshold
    # and allows the pair's types
    found = rel.candidate_index(spans)
    scores = numpy.random.RandomState(0).dirichlet(numpy.ones(len(rel.labels) + 1), size=len(pairs)).astype("f")
    rel.set_annotations([doc], ([found], scores))
    want = []
    for (a, b), row in zip(pairs, scores):
        best = int(row[1:].argmax()) + 1
        label = rel.labels[best - 1]
        if row[best] >= rel.cfg["threshold"] and row[best] > row[0] and [a.label_, b.label_] in rel.cfg["allowed_pairs"][label]:
            want.append(make_relation(label, a, b, score=row[best]))
    assert doc._.relations == want and 0 < len(want) < len(pairs)
