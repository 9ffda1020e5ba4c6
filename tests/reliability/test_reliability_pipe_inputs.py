"""nlp.pipe over hostile inputs: the shipped single-pass pipeline (transformer with a
P=5 deep prompt + token_ner + relation_extractor, from configs/tok_soft-frozen_cpu.cfg) on a
tiny random MegatronBert never raises, and every offset it produces points into
the input exactly (doc.text == input, entity text == input[start:end], relation
arguments are entities, brat output reads back with the same text)."""
import pytest
from reliability_helpers import build_pipeline, check_doc_matches_text

from spacy_softprompt.data.brat import parse_ann, write_ann
from spacy_softprompt.data.docs import doc_to_brat
from spacy_softprompt.data.errors import IssueCollector

FILLER = "the patient was given aspirin 10 mg po daily for pain and fever no nausea rash or headache".split()


def _words(n: int) -> str:
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


EDGE_INPUTS = {
    "empty": "",
    "whitespace": "  \n\t \r\n   ",
    "one_50k_char_token": "x" * 50_000,
    "50k_chars_no_punctuation": ("aspirin heparin warfarin insulin metformin " * 1200)[:50_000],
    "mixed_scripts": "Patient 患者 المريض пациент Ασθενής रोगी 🙂 took ÀSPIRIN ½ tab; señal µg ≥ 5 ﬁx",
    "control_characters": "aspirin\x00 10\x01mg\x07 daily\x1b[0m\x7f zero\u200bwidth\ufeffbom\u2028line\u2029para\x0cform",
    "crlf": "Aspirin 81 mg daily.\r\nHeparin 5000 units SC q12h.\r\n\r\nNo rash.\r\n",
    "lone_cr_and_tabs": "aspirin\r10 mg\t\tdaily\rwarfarin\t2 mg",
    "combining_marks": "aspi\u0301rin e\u0301 10 mg \u200d\u200c daily",
    "note_20k_words": _words(20_000),
}


@pytest.fixture(scope="module")
def nlp(tiny_megatron):
    return build_pipeline(tiny_megatron)


@pytest.mark.parametrize("name", sorted(EDGE_INPUTS))
def test_each_input_alone(nlp, name):
    text = EDGE_INPUTS[name]
    docs = list(nlp.pipe([text]))
    assert len(docs) == 1
    check_doc_matches_text(docs[0], text)


def test_entities_are_predicted_and_checked(nlp):
    """The untrained heads do predict entities on these inputs, so the offset checks are not vacuous."""
    names = ["mixed_scripts", "control_characters", "crlf", "50k_chars_no_punctuation"]
    checked = sum(check_doc_matches_text(doc, EDGE_INPUTS[n]) for n, doc in zip(names, nlp.pipe(EDGE_INPUTS[n] for n in names)))
    assert checked > 0


def test_brat_output_of_predictions_reads_back_with_the_same_text(nlp):
    for name in ("mixed_scripts", "control_characters", "crlf", "lone_cr_and_tabs", "combining_marks"):
        text = EDGE_INPUTS[name]
        doc = nlp(text)
        brat = doc_to_brat(doc, doc_id=name)
        assert brat.text == text
        collector = IssueCollector(strict=True, log=False)  # span text disagreeing with the offsets would raise
        again = parse_ann(write_ann(brat), text, doc_id=name, collector=collector)
        assert len(again.entities) == len(brat.entities)
        for ent in again.entities:
            for start, end in ent.fragments:
                assert 0 <= start < end <= len(text)


NON_EMPTY_SHORT = ["mixed_scripts", "control_characters", "crlf", "lone_cr_and_tabs", "combining_marks"]

#: notes with given entities (ner disabled), so that relation candidates exist whatever the untrained ner does
WITH_ENTITIES = [
    ("患者 aspirin 10 mg daily; warfarin\r\n2 mg daily", [("aspirin", "Drug"), ("10 mg", "Strength"), ("daily", "Frequency"), ("warfarin", "Drug"), ("2 mg", "Strength")]),
    ("heparin\x00 5 ml twice \u200b after surgery", [("heparin", "Drug"), ("5 ml", "Strength"), ("twice", "Frequency")]),
]


def _docs_with_entities(nlp, extra_texts=()):
    from spacy_softprompt.annotations import set_entities

    docs = []
    for text, ents in WITH_ENTITIES:
        doc = nlp.make_doc(text)
        spans = []
        for surface, label in ents:
            start = text.index(surface)
            spans.append(doc.char_span(start, start + len(surface), label=label, alignment_mode="expand"))
        set_entities(doc, spans)
        docs.append(doc)
    return docs + [nlp.make_doc(t) for t in extra_texts]


def test_short_inputs_in_one_batch(nlp):
    texts = [EDGE_INPUTS[n] for n in NON_EMPTY_SHORT]
    for text, doc in zip(texts, nlp.pipe(texts, batch_size=len(texts))):
        check_doc_matches_text(doc, text)


def test_relations_on_given_entities_point_into_the_text(nlp):
    docs = _docs_with_entities(nlp)
    n_candidates = sum(len(nlp.get_pipe("relation_extractor").candidates(list(d.spans["entities"]))) for d in docs)
    assert n_candidates > 0
    output = nlp.get_pipe("relation_extractor").model.get_ref("output_layer")
    bias = output.get_param("b").copy()
    try:  # make the untrained classifier prefer some relation over "no relation"
        forced = bias.copy()
        forced[0] = -1e4
        output.set_param("b", forced)
        out = list(nlp.pipe(docs, disable=["token_ner"]))
    finally:
        output.set_param("b", bias)
    assert sum(len(doc._.relations) for doc in out) > 0
    for doc, (text, _) in zip(out, WITH_ENTITIES):
        check_doc_matches_text(doc, text)


@pytest.mark.parametrize("order", ["empty_first", "empty_last"])
def test_empty_docs_batched_with_docs_that_have_relation_candidates(nlp, order):
    empties = ["", "  \n "]
    docs = _docs_with_entities(nlp)
    extra = [nlp.make_doc(t) for t in empties]
    docs = extra + docs if order == "empty_first" else docs + extra
    texts = [d.text for d in docs]
    out = list(nlp.pipe(docs, batch_size=len(docs), disable=["token_ner"]))
    for text, doc in zip(texts, out):
        check_doc_matches_text(doc, text)


def test_empty_docs_in_a_batch_of_plain_texts(nlp):
    """Empty and whitespace-only notes among plain texts in one batch."""
    texts = ["", EDGE_INPUTS["crlf"], "   ", EDGE_INPUTS["mixed_scripts"], "\n"]
    for text, doc in zip(texts, nlp.pipe(texts, batch_size=len(texts))):
        check_doc_matches_text(doc, text)
