"""annotate_shard (the Ray-free unit of work) and the final verification, driven by a plain loop."""
import json

import pytest
import spacy

from spacy_softprompt.annotate import annotate
from spacy_softprompt.data.brat import read_brat_dir
from spacy_softprompt.scale import VerificationError, annotate_shard, pack, read_records, verify
from spacy_softprompt.annotate import safe_error
from spacy_softprompt.scale.verify import ERRORS_FILE, SUCCESS

from scale_helpers import synthetic_notes, write_jsonl


def run_plain_loop(nlp, plan, output_format="jsonl", **kwargs):
    return [annotate_shard(nlp, plan.input_path(s), plan.output_path(s, output_format), **kwargs) for s in plan.shards]


@pytest.fixture
def notes():
    notes = synthetic_notes(30)
    notes["note-0004"] = "Started warfarin 5 mg. BOOM"
    return notes


def test_one_record_per_note_bad_note_failed_without_text_rest_ok(pipeline, components, notes, tmp_path):
    plan = pack(write_jsonl(tmp_path / "in.jsonl", notes), tmp_path / "out", shard_size=8)
    results = run_plain_loop(spacy.load(pipeline), plan, batch_size=4)
    assert sum(r.notes for r in results) == 30 and sum(r.failed for r in results) == 1
    records = [r for s in plan.shards for r in read_records(plan.output_path(s, "jsonl"))]
    assert [r["id"] for r in records] == list(notes)
    bad = next(r for r in records if r["id"] == "note-0004")
    assert bad["status"] == "failed" and bad["error"].startswith("ValueError: cannot handle")
    assert "Started" not in bad["error"] and bad["text"] is None
    assert all(r["status"] == "ok" and r["entities"] for r in records if r["id"] != "note-0004")
    marker = verify(plan, "jsonl")
    assert (marker["notes"], marker["ok"], marker["failed"], marker["shards"]) == (30, 29, 1, 4)
    assert json.loads((tmp_path / "out" / SUCCESS).read_text())["failed"] == 1
    assert [json.loads(l)["id"] for l in (tmp_path / "out" / ERRORS_FILE).read_text().splitlines()] == ["note-0004"]


@pytest.mark.parametrize("overlap", [False, True])
def test_records_match_the_local_engine(pipeline, components, notes, tmp_path, overlap):
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    nlp = spacy.load(pipeline)
    plan = pack(src, tmp_path / "out", shard_size=7)
    run_plain_loop(nlp, plan, batch_size=2, overlap=overlap)  # overlap: the next batch's front in a thread
    annotate(nlp, src, tmp_path / "local.jsonl", output_format="jsonl", progress=False)
    local = {r["id"]: r for r in map(json.loads, (tmp_path / "local.jsonl").read_text().splitlines())}
    sharded = {r["id"]: r for s in plan.shards for r in read_records(plan.output_path(s, "jsonl")) if r["status"] == "ok"}
    assert set(sharded) == set(local) and len(local) == 29
    for doc_id, record in sharded.items():
        assert {k: record[k] for k in ("text", "entities", "relations")} == {k: local[doc_id][k] for k in ("text", "entities", "relations")}
    assert any(r["relations"] for r in sharded.values())


def test_existing_output_is_skipped_and_a_redone_shard_replaces(pipeline, components, tmp_path):
    plan = pack(write_jsonl(tmp_path / "in.jsonl", synthetic_notes(10)), tmp_path / "out", shard_size=5)
    nlp = spacy.load(pipeline)
    first = run_plain_loop(nlp, plan)
    out0 = plan.output_path(plan.shards[0], "jsonl")
    stamp = out0.stat().st_mtime_ns
    second = run_plain_loop(nlp, plan)
    assert [r.skipped for r in first] == [False, False] and [r.skipped for r in second] == [True, True]
    assert out0.stat().st_mtime_ns == stamp and second[0].ok == 5
    out1 = plan.output_path(plan.shards[1], "jsonl")
    out1.unlink()
    (out1.parent / f".{out1.name}.999.partial").write_text('{"id": "note-0005"', encoding="utf8")
    third = run_plain_loop(nlp, plan)
    assert [r.skipped for r in third] == [True, False]
    assert verify(plan, "jsonl")["ok"] == 10


def test_verify_refuses_missing_or_extra_records_and_sets_the_shard_aside(pipeline, components, tmp_path):
    plan = pack(write_jsonl(tmp_path / "in.jsonl", synthetic_notes(10)), tmp_path / "out", shard_size=5)
    run_plain_loop(spacy.load(pipeline), plan)
    out1 = plan.output_path(plan.shards[1], "jsonl")
    lines = out1.read_text(encoding="utf8").splitlines()
    out1.write_text("\n".join(lines + lines[:1]) + "\n", encoding="utf8")  # one note twice
    with pytest.raises(VerificationError, match=plan.shards[1].name):
        verify(plan, "jsonl")
    assert not out1.exists() and out1.with_name(out1.name + ".invalid").exists()
    assert not (tmp_path / "out" / SUCCESS).exists()


def test_parquet_output_holds_the_same_records(pipeline, components, notes, tmp_path):
    pytest.importorskip("pyarrow")
    plan = pack(write_jsonl(tmp_path / "in.jsonl", notes), tmp_path / "out", shard_size=16)
    nlp = spacy.load(pipeline)
    run_plain_loop(nlp, plan, "jsonl")
    run_plain_loop(nlp, plan, "parquet")
    for shard in plan.shards:
        assert list(read_records(plan.output_path(shard, "parquet"))) == list(read_records(plan.output_path(shard, "jsonl")))
    assert verify(plan, "parquet")["failed"] == 1


def test_brat_files_for_ok_notes(pipeline, components, notes, tmp_path):
    plan = pack(write_jsonl(tmp_path / "in.jsonl", notes), tmp_path / "out", shard_size=16)
    run_plain_loop(spacy.load(pipeline), plan, brat_dir=tmp_path / "out" / "brat")
    docs = {d.doc_id: d for d in read_brat_dir(tmp_path / "out" / "brat")}
    assert set(docs) == set(notes) - {"note-0004"}
    doc = docs["note-0001"]
    assert doc.text == notes["note-0001"]
    assert sorted(doc.text[e.start : e.end] for e in doc.entities) == ["6 mg", "heparin", "heparin"]
    assert [r.type for r in doc.relations] == ["Strength-Drug"]


def test_safe_error_scrubs_words_of_the_note():
    text = "Patient Smith took aspirin 5 mg"
    assert safe_error(ValueError("token 'aspirin' unknown near Smith"), text) == "ValueError: token '[note text]' unknown near [note text]"
    assert safe_error(KeyError("x" * 500), None).endswith("...")


MEDICATION_EVENTS = {  # a corpus where drugs are events and strengths their arguments
    "entities": {"Medication": "Drug", "Strength": "Strength"},
    "relations": {
        "Strength-Drug": {"rules": [{"event": "Medication", "role": "Strength", "arg1": ["Medication"], "arg2": ["Strength"], "swap": True}]}
    },
}


def test_brat_files_in_a_schemas_source_form_match_the_local_engine(pipeline, components, notes, tmp_path):
    from spacy_softprompt.data.schema import apply_schema, schema_from_dict

    schema = schema_from_dict(MEDICATION_EVENTS)
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    nlp = spacy.load(pipeline)
    plan = pack(src, tmp_path / "out", shard_size=16)
    run_plain_loop(nlp, plan, brat_dir=tmp_path / "out" / "brat", brat_schema=schema)
    annotate(nlp, src, tmp_path / "local", progress=False, brat_schema=schema)
    sharded, local = tmp_path / "out" / "brat", tmp_path / "local"
    names = sorted(p.name for p in sharded.glob("*.ann"))
    assert names == sorted(p.name for p in local.glob("*.ann")) and len(names) == 29
    assert all((sharded / n).read_bytes() == (local / n).read_bytes() for n in names)
    doc = {d.doc_id: d for d in read_brat_dir(local, strict=True)}["note-0001"]
    assert sorted(e.type for e in doc.entities) == ["Medication", "Medication", "Strength"]
    assert not doc.relations  # the relation became an argument of the drug's event
    assert sorted((ev.type, [role for role, _ in ev.args]) for ev in doc.events) == [("Medication", []), ("Medication", ["Strength"])]
    mapped = apply_schema(doc, schema)  # read back through the schema: the pipeline's own labels and relation
    assert sorted(label for _, label in mapped.entities) == ["Drug", "Drug", "Strength"]
    assert [(r.label, doc.text[r.arg1.start : r.arg1.end]) for r in mapped.relations] == [("Strength-Drug", "6 mg")]
