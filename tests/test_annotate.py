"""annotate: resumable, each document written exactly once, failures reported and the rest goes on."""
import json

import pytest
import spacy
from spacy.language import Language

from spacy_softprompt.annotate import ERRORS_FILE, annotate
from spacy_softprompt.data.brat import read_brat_dir

TEXTS = {
    "a": "Aspirin 81 mg daily.",
    "b": "No aspirin.\r\nHeparin given.",
    "c": "Warfarin held; aspirin µ-dose ± 5 mg.",
    "d": "Nothing here.",
    "e": "aspirin again and ASPIRIN",
}


class Interrupt(BaseException):
    """Stands in for a kill: not an Exception, so annotate does not swallow it."""


@Language.component("test_explode_on_boom")
def explode_on_boom(doc):
    if "BOOM" in doc.text:
        raise ValueError("cannot process this one")
    if "STOP" in doc.text:
        raise Interrupt()
    return doc


def make_nlp(extra=None):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "Drug", "pattern": [{"LOWER": w}]} for w in ("aspirin", "heparin", "warfarin")])
    if extra:
        nlp.add_pipe(extra)
    return nlp


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / f"{name}.txt").write_bytes(text.encode("utf8"))
    return folder


def test_brat_output_offsets_match_text(notes, tmp_path):
    report = annotate(make_nlp(), notes, tmp_path / "out", progress=False)
    assert report.written == 5 and not report.failed
    docs = {d.doc_id: d for d in read_brat_dir(tmp_path / "out")}
    assert set(docs) == set(TEXTS)
    for doc_id, doc in docs.items():
        assert doc.text == TEXTS[doc_id]
        for ent in doc.entities:
            assert doc.text[ent.start : ent.end].lower() in {"aspirin", "heparin", "warfarin"}
    assert len(docs["e"].entities) == 2


def test_restart_after_interrupt_writes_each_document_once(notes, tmp_path):
    (notes / "c.txt").write_text("STOP " + TEXTS["c"], encoding="utf8")
    with pytest.raises(Interrupt):
        annotate(make_nlp("test_explode_on_boom"), notes, tmp_path / "out.jsonl", output_format="jsonl", batch_size=1, progress=False)
    with (tmp_path / "out.jsonl").open("a", encoding="utf8") as f:
        f.write('{"id": "c", "text": "half a li')  # a line cut by the kill
    (notes / "c.txt").write_text(TEXTS["c"], encoding="utf8")
    report = annotate(make_nlp(), notes, tmp_path / "out.jsonl", output_format="jsonl", progress=False)
    assert report.skipped_existing == 2 and report.written == 3
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text(encoding="utf8").splitlines()]
    assert sorted(ids) == sorted(TEXTS)


def test_brat_restart_skips_done_and_ignores_partial_files(notes, tmp_path):
    out = tmp_path / "out"
    annotate(make_nlp(), notes, out, progress=False)
    (out / "a.ann").unlink()
    (out / "b.ann.partial").write_text("T1\tDrug 0", encoding="utf8")
    report = annotate(make_nlp(), notes, out, progress=False)
    assert report.written == 1 and report.skipped_existing == 4
    assert len(list(out.glob("*.ann"))) == 5


def test_failing_and_corrupt_documents_are_reported_and_the_rest_goes_on(notes, tmp_path):
    (notes / "bad.txt").write_bytes(b"aspirin \xff\xfe not utf8")
    (notes / "boom.txt").write_text("aspirin BOOM", encoding="utf8")
    out = tmp_path / "out"
    report = annotate(make_nlp("test_explode_on_boom"), notes, out, batch_size=4, progress=False)
    assert report.written == 5
    failed = {f["id"]: f["error"] for f in report.failed}
    assert set(failed) == {"bad", "boom"}
    assert "UnicodeDecodeError" in failed["bad"] and "ValueError" in failed["boom"]
    logged = [json.loads(l) for l in (out / ERRORS_FILE).read_text().splitlines()]
    assert {e["id"] for e in logged} == {"bad", "boom"}
    assert all("aspirin" not in e["error"] for e in logged)  # no note text in the error log


def test_jsonl_input_with_a_broken_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "aspirin"}\nnot json\n{"id": 2, "text": "heparin"}\n{"id": 3}\n', encoding="utf8")
    report = annotate(make_nlp(), src, tmp_path / "out.jsonl", output_format="jsonl", progress=False)
    assert report.written == 2
    assert sorted(f["id"] for f in report.failed) == ["in.jsonl:2", "in.jsonl:4"]
    records = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["entities"][0]["text"] for r in records] == ["aspirin", "heparin"]


def test_worker_processes_load_test_components_and_isolate_a_failure(notes, tmp_path):
    """Spawned workers import the module that defines a component; a failing
    document is reported and the rest match one process."""
    (notes / "boom.txt").write_text("aspirin BOOM", encoding="utf8")
    nlp = make_nlp("test_explode_on_boom")
    one = annotate(nlp, notes, tmp_path / "one.jsonl", output_format="jsonl", batch_size=2, progress=False)
    two = annotate(nlp, notes, tmp_path / "two.jsonl", output_format="jsonl", batch_size=2, n_process=2, progress=False)
    assert two.to_dict() == one.to_dict()
    assert two.written == 5 and [f["id"] for f in two.failed] == ["boom"]
    assert (tmp_path / "two.jsonl").read_text(encoding="utf8") == (tmp_path / "one.jsonl").read_text(encoding="utf8")


def test_a_schema_for_brat_output_is_checked_before_anything_is_written(notes, tmp_path):
    from spacy_softprompt.safe_io import AnnotateError

    with pytest.raises(AnnotateError, match="applies to brat files"):
        annotate(make_nlp(), notes, tmp_path / "out.jsonl", output_format="jsonl", progress=False, brat_schema="n2c2_2018")
    with pytest.raises(AnnotateError, match="no shipped schema of that name"):
        annotate(make_nlp(), notes, tmp_path / "out", progress=False, brat_schema="no_such_schema")
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out").exists()


def test_brat_output_in_the_sdoh_source_form(tmp_path):
    from spacy_softprompt.data.schema import apply_schema, load_schema

    @Language.component("test_sdoh_status_relation")
    def status_relation(doc):
        from spacy_softprompt.annotations import make_relation

        alcohol = [e for e in doc.ents if e.label_ == "Alcohol"]
        status = [e for e in doc.ents if e.label_.startswith("StatusTime_")]
        doc._.relations = [make_relation("Status", a, s) for a in alcohol for s in status]
        return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(
        [{"label": "Alcohol", "pattern": "alcohol"}, {"label": "StatusTime_none", "pattern": "Denies"}]
    )
    nlp.add_pipe("test_sdoh_status_relation")
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "n1.txt").write_text("Denies alcohol.", encoding="utf8")
    annotate(nlp, folder, tmp_path / "out", progress=False, brat_schema="n2c2_2022_sdoh")
    ann = (tmp_path / "out" / "n1.ann").read_text(encoding="utf8")
    assert ann.splitlines() == [
        "T1\tStatusTime 0 6\tDenies",
        "T2\tAlcohol 7 14\talcohol",
        "E1\tAlcohol:T2 Status:T1",
        "A1\tStatusTimeVal T1 none",
    ]
    doc = read_brat_dir(tmp_path / "out", strict=True)[0]
    mapped = apply_schema(doc, load_schema("n2c2_2022_sdoh"))
    assert sorted(label for _, label in mapped.entities) == ["Alcohol", "StatusTime_none"]
    assert [r.label for r in mapped.relations] == ["Status"]
