"""Fuzzing the whole conversion path, not just the .ann parser.

tests/data/test_brat_hypothesis.py already checks that random .ann lines raise
nothing but BratError in ``parse_ann`` and that well-formed annotations round-trip
(brat -> brat and brat -> Doc -> brat). What it leaves out, covered here: random
*bytes* as files (decoding, missing partners) and plausible-but-inconsistent
annotations (overlapping, crossing, past-the-end, dangling ids) pushed through
``brat_to_doc`` with and without a schema, then written back and read again.
"""
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacy_softprompt.data.brat import parse_ann, read_brat_file, write_ann
from spacy_softprompt.data.docs import brat_to_doc, doc_to_brat
from spacy_softprompt.data.errors import BratError, IssueCollector
from spacy_softprompt.data.schema import load_schema

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
TYPES = ["Medication", "Dosage", "Administration", "Frequency", "Sign_symptom", "Disease_disorder", "Other"]
TEXT = st.text(alphabet=string.ascii_letters + " \n\r\t.,;-/µé患\u200b", min_size=0, max_size=80)


@st.composite
def plausible_ann(draw, n_chars: int):
    """Lines that look like brat, with offsets and ids that may not make sense."""
    off = st.integers(0, n_chars + 3)
    lines = []
    for i in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from("TTTRREAN#*"))
        if kind == "T":
            frags = ";".join(f"{draw(off)} {draw(off)}" for _ in range(draw(st.integers(1, 3))))
            lines.append(f"T{draw(st.integers(1, 6))}\t{draw(st.sampled_from(TYPES))} {frags}\t{draw(st.text(max_size=10))}")
        elif kind == "R":
            rel = draw(st.sampled_from(["MODIFY", "CAUSE", "X"]))
            lines.append(f"R{i}\t{rel} Arg1:{draw(st.sampled_from(['T1', 'T2', 'T3', 'E1', 'T9']))} Arg2:{draw(st.sampled_from(['T1', 'T2', 'E1', 'R1']))}")
        elif kind == "E":
            lines.append(f"E{draw(st.integers(1, 3))}\tEv:T{draw(st.integers(1, 4))} Cause:T{draw(st.integers(1, 4))} Effect2:E1")
        elif kind == "A":
            lines.append(f"A{i}\tNegation T{draw(st.integers(1, 4))}" + draw(st.sampled_from(["", " yes", " a b"])))
        elif kind == "N":
            lines.append(f"N{i}\tReference T1 Wikipedia:123\tx")
        elif kind == "#":
            lines.append(f"#{i}\tAnnotatorNotes T{draw(st.integers(1, 4))}\t{draw(st.text(max_size=10))}")
        else:
            lines.append("*\tOverlap T1 T2")
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    return sep.join(lines) + draw(st.sampled_from(["", sep]))


@st.composite
def brat_pairs(draw):
    text = draw(TEXT)
    ann = draw(plausible_ann(len(text)))
    text_bytes = text.encode("utf8")
    ann_bytes = ann.encode("utf8")
    if draw(st.booleans()):
        text_bytes = draw(st.binary(max_size=60)) if draw(st.booleans()) else text_bytes + b"\xff\xfe"
    if draw(st.integers(0, 4)) == 0:
        ann_bytes = draw(st.binary(max_size=60))
    return text_bytes, ann_bytes


def _convert(nlp, brat_doc, schema):
    collector = IssueCollector(log=False)
    doc = brat_to_doc(nlp, brat_doc, schema, collector=collector)
    assert doc.text == brat_doc.text
    for ent in doc.spans.get("entities", []):
        assert doc.text[ent.start_char : ent.end_char] == ent.text
    back = doc_to_brat(doc, doc_id="x")
    again = parse_ann(write_ann(back), back.text, collector=IssueCollector(log=False))
    assert len(again.entities) == len(back.entities)
    return collector


@SETTINGS
@given(brat_pairs())
def test_random_files_convert_or_raise_brat_error(clinical_nlp, tmp_path_factory, pair):
    text_bytes, ann_bytes = pair
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "n.txt").write_bytes(text_bytes)
    (folder / "n.ann").write_bytes(ann_bytes)
    try:
        read_brat_file(folder / "n.txt", strict=True)
    except BratError as err:
        assert err.issue is None or len(err.issue.excerpt) <= 40
    collector = IssueCollector(log=False)
    brat_doc = read_brat_file(folder / "n.txt", collector=collector)  # lenient: never raises
    for schema in (None, load_schema("maccrobat_medication")):
        issues = _convert(clinical_nlp, brat_doc, schema)
        assert all(len(i.excerpt) <= 40 for i in collector.issues + issues.issues)


def test_files_without_partners(clinical_nlp, tmp_path):
    from spacy_softprompt.data.readers import convert_brat_dir

    (tmp_path / "only.ann").write_text("T1\tDrug 0 3\tabc\n", encoding="utf8")
    (tmp_path / "only_text.txt").write_text("abc def", encoding="utf8")
    stats = convert_brat_dir(tmp_path, tmp_path / "out.spacy", nlp=clinical_nlp)
    assert stats.documents == 1
    assert [i.kind for i in stats.issues] == ["missing_file", "missing_file"]
