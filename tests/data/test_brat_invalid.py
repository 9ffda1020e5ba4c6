"""Bad brat input: every issue names file, line and id; strict raises BratError; nothing else is lost."""
import pytest

from spacy_softprompt.data.brat import parse_ann, read_brat_dir, read_brat_file, write_ann
from spacy_softprompt.data.errors import BratError, IssueCollector

TEXT = "Patient took aspirin 81 mg daily."
GOOD = "T1\tDrug 13 20\taspirin\nT2\tStrength 21 26\t81 mg\nR1\tStrength-Drug Arg1:T2 Arg2:T1\n"

# (bad line, expected issue kind, expected id in the issue)
BAD_LINES = [
    ("T3\tDrug 13 x\taspirin", "malformed", "T3"),
    ("T3\tDrug 20 13\taspirin", "malformed", "T3"),
    ("T3\tDrug13 20\taspirin", "malformed", "T3"),
    ("T3 Drug 13 20 aspirin", "malformed", "T3"),
    ("T3\t 13 20\taspirin", "malformed", "T3"),
    ("R3\tStrength-Drug Arg1:T2", "malformed", "R3"),
    ("R3\tStrength-Drug Arg1:T2 Arg2 T1", "malformed", "R3"),
    ("E3\t", "malformed", "E3"),
    ("E3\tDrug:T1 Cause", "malformed", "E3"),
    ("A3\tNegated", "malformed", "A3"),
    ("#3\tAnnotatorNotes\tmissing target", "malformed", "#3"),
    ("*\tEquiv T1", "malformed", "*"),
    ("T\tDrug 13 20\taspirin", "malformed", "T"),
    ("T3\tDrug 13 200\taspirin", "offsets", "T3"),
    ("T3\tDrug 13 13\t", "offsets", "T3"),
    ("T3\tDrug 13 20\taspirine", "span_text", "T3"),
    ("R3\tStrength-Drug Arg1:T2 Arg2:T9", "missing_id", "R3"),
    ("R3\tStrength-Drug Arg1:T2 Arg2:R1", "missing_id", "R3"),
    ("E3\tDrug:T9", "missing_id", "E3"),
    ("E3\tDrug:T1 Cause:E7", "missing_id", "E3"),
    ("A3\tNegated T9", "missing_id", "A3"),
    ("#3\tAnnotatorNotes T9\tnote", "missing_id", "#3"),
    ("*\tEquiv T1 T9", "missing_id", "*"),
    ("T1\tDrug 21 26\t81 mg", "duplicate_id", "T1"),
]


@pytest.mark.parametrize("bad,kind,ann_id", BAD_LINES)
def test_bad_line_is_reported_and_the_rest_kept(bad, kind, ann_id):
    ann = "T1\tDrug 13 20\taspirin\n" + bad + "\nT2\tStrength 21 26\t81 mg\nR1\tStrength-Drug Arg1:T2 Arg2:T1\n"
    collector = IssueCollector(log=False)
    doc = parse_ann(ann, TEXT, doc_id="doc", file="notes/doc.ann", collector=collector)
    assert len(collector.issues) == 1, collector.issues
    issue = collector.issues[0]
    assert (issue.file, issue.line, issue.ann_id, issue.kind) == ("notes/doc.ann", 2, ann_id, kind)
    assert len(issue.excerpt) <= 40
    # the good annotations are all there
    ids = {e.id for e in doc.entities} | {r.id for r in doc.relations}
    assert {"T1", "T2", "R1"} <= ids
    # nothing is lost when writing back: a malformed or duplicate line is kept verbatim
    if kind in ("malformed", "duplicate_id"):
        assert doc.other == [bad]
    assert bad.split("\t")[0] in write_ann(doc) or bad in write_ann(doc)


@pytest.mark.parametrize("bad,kind,ann_id", BAD_LINES)
def test_strict_mode_raises_brat_error(bad, kind, ann_id):
    ann = GOOD + bad + "\n"
    with pytest.raises(BratError) as err:
        parse_ann(ann, TEXT, file="doc.ann", strict=True)
    assert err.value.issue.ann_id == ann_id and err.value.issue.line == 4
    assert f"doc.ann:4 [{ann_id}]" in str(err.value)


def test_issue_excerpt_never_carries_more_note_text():
    secret = "patient name John Smith lives at 12 Long Street, Springfield, phone 555 0100"
    collector = IssueCollector(log=False)
    parse_ann(f"#1\tAnnotatorNotes T9\t{secret}\n", TEXT, collector=collector)
    issue = collector.issues[0]
    assert len(issue.excerpt) <= 40 and "Springfield" not in str(issue)


def test_many_bad_lines_each_reported():
    ann = "".join(bad + "\n" for bad, _, _ in BAD_LINES if not bad.startswith("T1\t")) + GOOD
    collector = IssueCollector(log=False)
    doc = parse_ann(ann, TEXT, collector=collector)
    assert len(collector.issues) >= len(BAD_LINES) - 1
    assert {"T1", "T2"} <= {e.id for e in doc.entities}


def test_non_utf8_text_is_reported_with_byte_offset(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"Dose 5 \xb5g of aspirin")
    (tmp_path / "bad.ann").write_bytes("T1\tDrug 13 20\taspirin\n".encode("utf-8"))
    collector = IssueCollector(log=False)
    doc = read_brat_file(tmp_path / "bad.txt", collector=collector)
    assert doc.text == "Dose 5 \ufffdg of aspirin"
    assert doc.entities[0].id == "T1"
    (issue,) = collector.issues
    assert issue.kind == "encoding" and issue.file.endswith("bad.txt") and "byte offset 7" in issue.message
    with pytest.raises(BratError):
        read_brat_file(tmp_path / "bad.txt", strict=True)


def test_non_utf8_ann_is_reported(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "a.ann").write_bytes(b"T1\tDrug 13 20\taspirin\n#1\tAnnotatorNotes T1\tcaf\xe9\n")
    collector = IssueCollector(log=False)
    doc = read_brat_file(tmp_path / "a.txt", collector=collector)
    assert doc.notes[0].text == "caf\ufffd"
    assert [i.kind for i in collector.issues] == ["encoding"]
    assert collector.issues[0].file.endswith("a.ann")


def test_unpaired_files_are_reported(tmp_path):
    (tmp_path / "only text.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "only ann.ann").write_text(GOOD, encoding="utf-8")
    (tmp_path / "pair.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "pair.ann").write_text(GOOD, encoding="utf-8")
    collector = IssueCollector(log=False)
    docs = read_brat_dir(tmp_path, collector=collector)
    assert [d.doc_id for d in docs] == ["only text", "pair"]
    assert docs[0].entities == [] and len(docs[1].entities) == 2
    assert sorted(i.file.rsplit("/", 1)[-1] for i in collector.issues) == ["only ann.ann", "only text.txt"]
    assert all(i.kind == "missing_file" for i in collector.issues)
    with pytest.raises(BratError):
        read_brat_dir(tmp_path, strict=True)


def test_missing_directory_raises(tmp_path):
    with pytest.raises(BratError):
        read_brat_dir(tmp_path / "nope")
