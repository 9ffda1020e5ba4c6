"""Relations render, and survive nlp.pipe with several processes."""
import spacy
from spacy.language import Language

from spacy_softprompt.annotations import get_relations, make_relation, relation_view, set_entities
from spacy_softprompt.visualize import render

TEXT = "Aspirin 81 mg daily caused a rash."


@Language.component("test_toy_relations")
def toy_relations(doc):
    spans = []
    for word, label in (("Aspirin", "Drug"), ("81 mg", "Strength"), ("rash", "ADE")):
        start = doc.text.find(word)
        if start >= 0:
            spans.append(doc.char_span(start, start + len(word), label=label))
    set_entities(doc, spans)
    if len(spans) == 3:
        doc._.relations = [make_relation("Strength-Drug", spans[1], spans[0]), make_relation("ADE-Drug", spans[2], spans[0])]
    return doc


def _nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("test_toy_relations")
    return nlp


def test_relation_view_and_html():
    doc = _nlp()(TEXT)
    assert relation_view(doc) == ['Strength-Drug: "81 mg" -> "Aspirin"', 'ADE-Drug: "rash" -> "Aspirin"']
    page = render(doc)
    assert "Strength-Drug" in page and "ADE-Drug" in page and "rash" in page
    assert page.count("<tr>") == 3


def test_relations_survive_multiprocessing():
    nlp = _nlp()
    texts = [TEXT, "Nothing.", TEXT.upper(), TEXT]
    single = [get_relations(d) for d in nlp.pipe(texts)]
    multi = [get_relations(d) for d in nlp.pipe(texts, n_process=2, batch_size=1)]
    assert multi == single
    assert len(multi[0]) == 2 and multi[1] == []
