"""mrc_relations on tiny random encoders: head-conditioned query rows, contexts,
argument order, learning, the full MRC pipeline, frozen sharing, serialization."""
import numpy
import pytest
import spacy
import torch
from spacy.training import Example
from spacy.util import fix_random_seed

from spacy_softprompt.annotations import make_relation, set_entities
from spacy_softprompt.mrc.relations import MRCRelationExtractor
from spacy_softprompt.mrc.rows import tokenize_docs
from spacy_softprompt.optimizers import PromptAdam

from test_mrc_helpers import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    TOY,
    ForwardCounter,
    char_spans,
    entity_keys,
    examples,
    gold_entities,
    make_nlp,
    module_of,
    one_torch_thread,
    reference,
    relation_keys,
    state_copy,
)

QUESTIONS = {"Strength-Drug": "strength of {arg2}", "Frequency-Drug": "how often {arg2}"}
TWO_DRUGS = (
    "aspirin 10 mg daily and heparin 5 ml twice",
    [("Drug", "aspirin"), ("Strength", "10 mg"), ("Frequency", "daily"), ("Drug", "heparin"), ("Strength", "5 ml"), ("Frequency", "twice")],
)


def _two_drug_example(nlp):
    text, ents = TWO_DRUGS
    ref = nlp.make_doc(text)
    spans = [ref.char_span(s, e, label=l) for s, e, l in char_spans(text, ents)]
    set_entities(ref, spans)
    aspirin, heparin = spans[0], spans[3]
    ref._.relations = [make_relation(f"{s.label_}-Drug", s, aspirin) for s in spans[1:3]] + [
        make_relation(f"{s.label_}-Drug", s, heparin) for s in spans[4:]
    ]
    return Example(nlp.make_doc(text), ref)


def _with_gold_entities(nlp, text, ents):
    doc = nlp.make_doc(text)
    set_entities(doc, [doc.char_span(s, e, label=l) for s, e, l in char_spans(text, ents)])
    return doc


def _gold_relations(nlp, data):
    return [relation_keys(reference(nlp, t, e)) for t, e in data]


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_one_row_per_head_and_label_carrying_the_head_mention(tiny_bert, mode):
    nlp = make_nlp(tiny_bert, rel={"query_mode": mode, "questions": QUESTIONS})
    egs = examples(nlp) + [_two_drug_example(nlp)]
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_relations")
    assert pipe.labels == ("Frequency-Drug", "Strength-Drug")
    assert pipe.head_side("Strength-Drug") == "arg2" and pipe.head_types("Strength-Drug") == {"Drug"}
    tok = pipe.tokenizer
    doc = _with_gold_entities(nlp, *TWO_DRUGS)
    counter = ForwardCounter(pipe.encoder)
    try:
        pipe(doc)
    finally:
        counter.close()
    assert len(counter.calls) == 1 and counter.rows == 2 * 2  # 2 drugs x 2 relation labels
    rows = pipe._make_rows([doc])
    pieces = tokenize_docs(tok, [doc])[0]
    assert len(rows) == 4
    for r, spec in enumerate(rows.specs):
        label, (hs, he, hl) = spec.key
        assert hl == "Drug" and rows.prompt_ids[r] == pipe.labels.index(label)
        ids = rows.input_ids[r][rows.attention_mask[r] == 1].tolist()
        sep = ids.index(tok.sep_token_id)
        query = ids[1:sep]
        head_pieces = pieces.pieces_of(hs, he).tolist()
        if mode == "soft":
            assert query == head_pieces
        else:
            text = pipe.template(label).replace("{arg2}", doc[hs:he].text)
            assert query == tok(text, add_special_tokens=False)["input_ids"]
            assert any(query[k : k + len(head_pieces)] == head_pieces for k in range(len(query)))
        types = rows.token_type_ids[r][rows.attention_mask[r] == 1]
        assert set(types[: sep + 1].tolist()) == {0}
        # context: type 1, except the head mention, marked with the query's type
        head_rows = numpy.flatnonzero((rows.word_index[r] >= hs) & (rows.word_index[r] < he))
        assert rows.token_type_ids[r, head_rows].tolist() == [0] * len(head_pieces)
        rest = [t for k, t in enumerate(types.tolist()) if k > sep and k not in set(head_rows.tolist())]
        assert set(rest) == {1}


def test_context_is_the_head_sentence_and_its_neighbours(tiny_bert):
    text = "no rash . aspirin 10 mg daily . heparin was stopped . no nausea . warfarin 2 mg ."
    nlp = make_nlp(tiny_bert, rel={"query_mode": "soft", "context_sentences": 1}, sentencizer=True)
    egs = examples(nlp)
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_relations")
    doc = nlp.get_pipe("sentencizer")(nlp.make_doc(text))
    set_entities(doc, [doc.char_span(text.index("heparin"), text.index("heparin") + 7, label="Drug")])
    sents = list(doc.sents)
    rows = pipe._make_rows([doc])
    assert {(s.ctx_start, s.ctx_end) for s in rows.specs} == {(sents[1].start, sents[3].end)}
    pipe.cfg["context_sentences"] = 0
    rows = pipe._make_rows([doc])
    assert {(s.ctx_start, s.ctx_end) for s in rows.specs} == {(sents[2].start, sents[2].end)}
    # without sentence boundaries: context_window tokens on each side
    plain = nlp.make_doc(text)
    set_entities(plain, [plain.char_span(text.index("heparin"), text.index("heparin") + 7, label="Drug")])
    pipe.cfg["context_window"] = 2
    head = plain.spans["entities"][0]
    rows = pipe._make_rows([plain])
    assert {(s.ctx_start, s.ctx_end) for s in rows.specs} == {(head.start - 2, head.end + 2)}
    # a small budget cuts the context around the head
    pipe.cfg["context_window"] = 100
    pipe.cfg["window_pieces"] = 6
    rows = pipe._make_rows([plain])
    for r, spec in enumerate(rows.specs):
        assert spec.ctx_start <= head.start and head.end <= spec.ctx_end
        assert rows.start_mask[r].sum() <= 6


def test_head_argument_from_schema_template_and_from_data(tiny_bert):
    nlp = make_nlp(tiny_bert, rel={"query_mode": "hard"})
    egs = examples(nlp)
    nlp.config["initialize"]["components"]["mrc_relations"] = {"task_schema": "n2c2_2018"}
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_relations")
    assert len(pipe.labels) == 8 and all(pipe.head_side(label) == "arg2" for label in pipe.labels)
    assert pipe.template("Dosage-Drug") == "What is the amount of {arg2} taken?"
    # relations written drug-first: the data makes arg1 the head
    nlp = make_nlp(tiny_bert, rel={"query_mode": "soft"})
    egs = examples(nlp)
    for eg in egs:
        eg.reference._.relations = [
            make_relation("has_" + r["label"].split("-")[0].lower(), r["arg2"], r["arg1"]) for r in eg.reference._.relations
        ]
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_relations")
    assert pipe.labels == ("has_frequency", "has_strength")
    assert all(pipe.head_side(label) == "arg1" for label in pipe.labels)
    assert pipe.cfg["allowed_pairs"]["has_strength"] == [["Drug", "Strength"]]
    doc = _with_gold_entities(nlp, *TOY[0])
    assert all(spec.key[1][2] == "Drug" for spec in pipe._make_rows([doc]).specs)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_relations_are_learned_in_the_right_argument_order(tiny_megatron, mode):
    fix_random_seed(0)
    nlp = make_nlp(tiny_megatron, rel={"query_mode": mode, "questions": QUESTIONS})
    egs = examples(nlp) + [_two_drug_example(nlp)]
    nlp.initialize(lambda: egs)
    optimizer = PromptAdam(learn_rate=1e-3, prompt_learn_rate=1e-2)
    steps = 300  # telling the two drugs of one note apart takes a while
    losses = [nlp.update(egs, sgd=optimizer)["mrc_relations"] for _ in range(steps)]
    assert losses[-1] < 0.2 * losses[0]
    data = TOY + [TWO_DRUGS]
    docs = list(nlp.get_pipe("mrc_relations").pipe([_with_gold_entities(nlp, t, e) for t, e in data]))
    predicted = [relation_keys(d) for d in docs]
    gold = _gold_relations(nlp, TOY) + [relation_keys(egs[-1].reference)]
    assert predicted == gold
    for rel in docs[0]._.relations:
        assert rel["arg2"][2] == "Drug" and rel["arg1"][2] == rel["label"].split("-")[0]
        assert 0.0 < rel["score"] <= 1.0


def test_full_mrc_pipeline_trains_pipes_and_round_trips(tiny_megatron, tmp_path):
    fix_random_seed(0)
    nlp = make_nlp(tiny_megatron, ner={"query_mode": "hard"}, rel={"query_mode": "hard", "questions": QUESTIONS})
    egs = examples(nlp)
    nlp.initialize(lambda: egs)
    optimizer = PromptAdam(learn_rate=3e-3, prompt_learn_rate=3e-2)
    for _ in range(90):
        nlp.update(egs, sgd=optimizer)
    texts = [t for t, _ in TOY]
    docs = list(nlp.pipe(texts, batch_size=2))
    assert [entity_keys(d) for d in docs] == gold_entities(TOY)
    assert [relation_keys(d) for d in docs] == _gold_relations(nlp, TOY)
    scores = nlp.evaluate(egs)
    assert scores["ents_strict_f"] == 1.0 and scores["rels_strict_f"] == 1.0
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.pipe_names == ["mrc_ner", "mrc_relations"]
    assert isinstance(loaded.get_pipe("mrc_relations"), MRCRelationExtractor)
    again = list(loaded.pipe(texts))
    assert [relation_keys(d) for d in again] == [relation_keys(d) for d in docs]
    for a, b in zip(docs, again):
        assert [r["score"] for r in a._.relations] == pytest.approx([r["score"] for r in b._.relations], abs=1e-5)


def test_frozen_components_share_one_backbone_and_keep_it(tiny_megatron):
    nlp = make_nlp(
        tiny_megatron, ner={"query_mode": "soft"}, rel={"query_mode": "soft"}, model={"freeze_backbone": True}
    )
    egs = examples(nlp)
    nlp.initialize(lambda: egs)
    ner, rel = module_of(nlp, "mrc_ner"), module_of(nlp, "mrc_relations")
    assert ner.encoder.backbone is rel.encoder.backbone
    before = state_copy(ner.encoder.backbone)
    prompts = [m.encoder.prompt_encoder.table.detach().clone() for m in (ner, rel)]
    optimizer = PromptAdam(learn_rate=1e-3, prompt_learn_rate=1e-2)
    for _ in range(3):
        nlp.update(egs, sgd=optimizer)
    after = ner.encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in ner.encoder.backbone.parameters())
    for module, prompt in zip((ner, rel), prompts):
        assert not torch.equal(module.encoder.prompt_encoder.table.detach(), prompt)
    assert rel.encoder.prompt_names == ["Frequency-Drug", "Strength-Drug"]


def test_negative_rows_are_sampled_in_training_only(tiny_bert):
    nlp = make_nlp(tiny_bert, rel={"query_mode": "soft", "negative_rows": 0.0})
    egs = examples(nlp) + [_two_drug_example(nlp)]
    nlp.initialize(lambda: egs)
    pipe = nlp.get_pipe("mrc_relations")
    # a second drug without relations: its queries have no answer
    extra = examples(nlp, [("aspirin 10 mg daily then heparin", [("Drug", "aspirin"), ("Strength", "10 mg"), ("Frequency", "daily"), ("Drug", "heparin")])])
    rows = pipe._make_rows([eg.predicted for eg in extra], extra)
    assert len(rows) == 2  # aspirin's two queries; heparin's (no answers) dropped
    assert all(spec.key[1][:2] == (0, 1) for spec in rows.specs) and len(rows.gold) == 2
    pipe.cfg["negative_rows"] = 1.0
    assert len(pipe._make_rows([eg.predicted for eg in extra], extra)) == 4
    doc = _with_gold_entities(nlp, "aspirin 10 mg daily then heparin", [("Drug", "aspirin"), ("Drug", "heparin")])
    pipe.cfg["negative_rows"] = 0.0
    assert len(pipe._make_rows([doc])) == 4  # inference asks every query


def test_relations_need_entities_of_allowed_types(tiny_bert):
    nlp = make_nlp(tiny_bert, rel={"query_mode": "soft", "threshold": 0.01, "match_threshold": 0.01})
    nlp.initialize(lambda: examples(nlp))
    pipe = nlp.get_pipe("mrc_relations")
    doc = _with_gold_entities(nlp, *TOY[0])
    pipe(doc)
    for rel in doc._.relations:  # whatever a random model finds, types and order are allowed ones
        assert [rel["arg1"][2], rel["arg2"][2]] in pipe.cfg["allowed_pairs"][rel["label"]]
    empty = nlp.make_doc("no drugs here")
    assert pipe(empty)._.relations == []
