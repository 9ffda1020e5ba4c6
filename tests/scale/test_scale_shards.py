"""Packing the input into immutable, deterministically named shards (no Ray needed)."""
import json

import pytest

from spacy_softprompt.scale import DuplicateNoteIdError, InputChangedError, ScaleError, load_plan, pack
from spacy_softprompt.scale.shards import read_shard

from scale_helpers import synthetic_notes, write_jsonl


def test_shards_keep_input_order_and_same_input_gives_same_names(tmp_path):
    notes = synthetic_notes(25)
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    plan = pack(src, tmp_path / "a", shard_size=10)
    assert [s.notes for s in plan.shards] == [10, 10, 5]
    assert [s.name[:11] for s in plan.shards] == ["shard-00000", "shard-00001", "shard-00002"]
    packed = [r for s in plan.shards for r in read_shard(plan.input_path(s))]
    assert [r["id"] for r in packed] == list(notes) and [r["text"] for r in packed] == list(notes.values())
    again = pack(src, tmp_path / "b", shard_size=10)
    assert [s.name for s in again.shards] == [s.name for s in plan.shards]
    assert load_plan(tmp_path / "a").shards == plan.shards


def test_repacking_the_same_input_rewrites_nothing(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", synthetic_notes(12))
    plan = pack(src, tmp_path / "out", shard_size=5)
    stamps = {s.name: plan.input_path(s).stat().st_mtime_ns for s in plan.shards}
    again = pack(src, tmp_path / "out", shard_size=5)
    assert {s.name: again.input_path(s).stat().st_mtime_ns for s in again.shards} == stamps


def test_duplicate_ids_are_refused_without_note_text(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"id": "n1", "text": "aspirin first"}) + "\n"
        + json.dumps({"id": "n2", "text": "heparin"}) + "\n"
        + json.dumps({"id": "n1", "text": "aspirin second"}) + "\n",
        encoding="utf8",
    )
    with pytest.raises(DuplicateNoteIdError) as info:
        pack(src, tmp_path / "out")
    message = str(info.value)
    assert "'n1'" in message and "in.jsonl line 1 and in.jsonl line 3" in message
    assert "aspirin" not in message


def test_a_changed_input_or_shard_size_is_refused(tmp_path):
    notes = synthetic_notes(12)
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    pack(src, tmp_path / "out", shard_size=5)
    with pytest.raises(InputChangedError, match="shard size 5"):
        pack(src, tmp_path / "out", shard_size=4)
    notes["note-0007"] = "changed"
    write_jsonl(src, notes)
    with pytest.raises(InputChangedError, match="shard 1 differs"):
        pack(src, tmp_path / "out", shard_size=5)
    write_jsonl(src, synthetic_notes(16))  # the 12 notes and 4 more
    with pytest.raises(InputChangedError, match="shard 2 differs"):
        pack(src, tmp_path / "out", shard_size=5)
    write_jsonl(src, synthetic_notes(10))
    with pytest.raises(InputChangedError, match="3 shards, this one has 2"):
        pack(src, tmp_path / "out", shard_size=5)


def test_txt_folder_unreadable_note_is_packed_with_its_error(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("aspirin 5 mg", encoding="utf8")
    (folder / "sub" / "b.txt").write_bytes(b"aspirin \xff\xfe")
    plan = pack(folder, tmp_path / "out")
    records = list(read_shard(plan.input_path(plan.shards[0])))
    assert [r["id"] for r in records] == ["a", "sub/b"]
    assert records[1]["text"] is None and records[1]["error"].startswith("UnicodeDecodeError")


def test_parquet_file_and_spark_style_folder(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "notes.parquet"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": ["aspirin", "heparin"], "extra": [0, 0]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"id": [3], "text": [None]}), folder / "part-1.parquet")
    plan = pack(folder, tmp_path / "out")
    records = list(read_shard(plan.input_path(plan.shards[0])))
    assert [(r["id"], r["text"]) for r in records] == [("1", "aspirin"), ("2", "heparin"), ("3", None)]
    assert records[2]["error"].startswith("TypeError")
    pq.write_table(pa.table({"note_id": [1], "text": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ScaleError, match="missing: id"):
        pack(tmp_path / "bad.parquet", tmp_path / "out2")
