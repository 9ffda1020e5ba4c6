"""Property tests: random well-formed annotations round-trip; random garbage raises only BratError."""
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacy_softprompt.data.brat import (
    Attribute,
    BratDocument,
    Entity,
    Equivalence,
    Event,
    Note,
    Relation,
    parse_ann,
    write_ann,
)
from spacy_softprompt.data.docs import brat_to_doc, doc_to_brat
from spacy_softprompt.data.errors import BratError, IssueCollector

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

WORD = st.text(alphabet=string.ascii_letters + "µ–é", min_size=1, max_size=8)
TYPE = st.sampled_from(["Drug", "Dosage", "Sign_symptom", "ADE", "X-1"])
TEXT = st.lists(
    st.tuples(WORD, st.sampled_from([" ", " ", "  ", "\n", "\r\n", ", ", "-", "/", ""])), min_size=1, max_size=25
).map(lambda parts: "".join(w + sep for w, sep in parts))
VALUE = st.one_of(st.none(), st.text(alphabet=string.ascii_letters + " -", min_size=1, max_size=12).filter(lambda v: v == v.strip() and "  " not in v))


@st.composite
def brat_documents(draw):
    text = draw(TEXT)
    n = len(text)
    entities = []
    for i in range(draw(st.integers(0, 8))):
        frags = []
        start = draw(st.integers(0, n - 1))
        for _ in range(draw(st.integers(1, 2))):
            if start >= n:
                break
            end = draw(st.integers(start + 1, min(n, start + 12)))
            frags.append((start, end))
            start = end + draw(st.integers(1, 4))
        entities.append(Entity(f"T{i + 1}", draw(TYPE), frags))
    doc = BratDocument(text=text, doc_id="doc", entities=entities)
    ids = [e.id for e in entities]
    if ids:
        for i in range(draw(st.integers(0, 3))):
            trigger = draw(st.sampled_from(ids))
            args = [(draw(st.sampled_from(["Cause", "Effect", "Effect2"])), draw(st.sampled_from(ids))) for _ in range(draw(st.integers(0, 2)))]
            doc.events.append(Event(f"E{i + 1}", "Ev", trigger, args))
        targets = ids + [e.id for e in doc.events]
        for i in range(draw(st.integers(0, 4))):
            doc.relations.append(Relation(f"R{i + 1}", draw(st.sampled_from(["MODIFY", "CAUSE"])), draw(st.sampled_from(targets)), draw(st.sampled_from(targets))))
        for i in range(draw(st.integers(0, 3))):
            doc.attributes.append(Attribute(f"A{i + 1}", "Name", draw(st.sampled_from(targets)), draw(VALUE)))
        for i in range(draw(st.integers(0, 2))):
            doc.notes.append(Note(f"#{i + 1}", "AnnotatorNotes", draw(st.sampled_from(targets)), draw(st.text(alphabet=string.ascii_letters + " \t", max_size=20))))
        if len(ids) >= 2 and draw(st.booleans()):
            doc.equivalences.append(Equivalence("Equiv", ids[:2]))
    return doc


@SETTINGS
@given(brat_documents())
def test_well_formed_documents_round_trip(doc):
    collector = IssueCollector(log=False)
    parsed = parse_ann(write_ann(doc), doc.text, doc_id="doc", collector=collector)
    assert parsed == doc
    assert not [i for i in collector.issues if i.kind != "span_text"]


@SETTINGS
@given(brat_documents())
def test_well_formed_documents_round_trip_through_docs(nlp, doc):
    spacy_doc = brat_to_doc(nlp, doc, collector=IssueCollector(log=False))
    assert doc_to_brat(spacy_doc) == doc
    assert spacy_doc.text == doc.text


GARBAGE_LINE = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda head, body: head + body,
        st.sampled_from(["T1\t", "T9\t", "R1\t", "E1\t", "A1\t", "M1\t", "#1\t", "*\t", "N1\t", "T", "R1 ", "\t"]),
        st.text(alphabet=string.printable + "µ–\x00\u2028", max_size=40),
    ),
)


@SETTINGS
@given(st.lists(GARBAGE_LINE, max_size=8), st.text(max_size=40))
def test_garbage_raises_only_brat_error(lines, text):
    ann = "\n".join(lines)
    try:
        parse_ann(ann, text, strict=True)
    except BratError as err:
        assert err.issue is not None and len(err.issue.excerpt) <= 40
    collector = IssueCollector(log=False)
    doc = parse_ann(ann, text, collector=collector)  # lenient mode never raises
    kept = len(doc.entities) + len(doc.relations) + len(doc.events) + len(doc.attributes)
    kept += len(doc.notes) + len(doc.equivalences) + len(doc.other)
    assert kept == sum(1 for line in ann.split("\n") if line.rstrip("\r").strip())  # nothing lost
    assert all(len(i.excerpt) <= 40 for i in collector.issues)
    # and whatever was read writes back to something that reads the same
    again = parse_ann(write_ann(doc), text, collector=IssueCollector(log=False))
    assert len(again.entities) == len(doc.entities)
