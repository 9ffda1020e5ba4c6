"""Issue 22, item 1: no write ever leaves OUT, whatever a note id holds; every id
gets a safe, unique, stable file name, recorded in OUT/doc_ids.jsonl."""
import json
import os

import pytest
from annotate_helpers import HOSTILE_IDS, brat_map, make_nlp, note_text, read_jsonl, snapshot, write_jsonl

from spacy_softprompt.annotate import annotate
from spacy_softprompt.safe_io import MAX_NAME, FileNames, hashed_name, is_plain_name
from spacy_softprompt.scale import pack, read_records
from spacy_softprompt.scale.worker import annotate_shard, brat_names_for


@pytest.fixture
def hostile(tmp_path):
    """Notes with the hostile ids (an absolute id pointing into tmp_path) in a sandbox."""
    sandbox = tmp_path / "sandbox"
    (sandbox / "deep" / "er").mkdir(parents=True)
    ids = HOSTILE_IDS + [str(sandbox / "absolute_target"), str(tmp_path / "outside")]
    notes = {doc_id: note_text(i) for i, doc_id in enumerate(ids)}
    src = write_jsonl(sandbox / "in.jsonl", notes)
    return sandbox, src, notes


def _check_brat_folder(out, notes, expect_ok):
    names = brat_map(out)
    assert set(names) == set(notes)
    lowered = [n.lower() for n in names.values()]
    assert len(set(lowered)) == len(lowered)  # unique even on a case-insensitive file system
    for doc_id, name in names.items():
        assert is_plain_name(name) and len(name) <= MAX_NAME
        txt, ann = out / (name + ".txt"), out / (name + ".ann")
        assert os.path.realpath(ann).startswith(os.path.realpath(out) + os.sep)
        if doc_id in expect_ok:
            assert txt.read_text(encoding="utf8") == notes[doc_id] and ann.is_file()


def test_local_brat_writes_every_hostile_id_inside_out_and_maps_it(hostile):
    sandbox, src, notes = hostile
    out = sandbox / "deep" / "er" / "out"
    before = snapshot(sandbox.parent)
    report = annotate(make_nlp(), src, out, progress=False)
    ok = set(notes) - {f["id"] for f in report.failed}
    assert report.written == len(ok) and ok >= set(notes) - {"\ud800lone"}
    after = snapshot(sandbox.parent, skip=[out])
    assert after == before  # nothing created or changed outside OUT
    _check_brat_folder(out, notes, ok)
    assert brat_map(out)["Note1"] == "Note1" and brat_map(out)["ok-plain_1.v2"] == "ok-plain_1.v2"
    assert brat_map(out)["note1"] != "note1" and brat_map(out)["CON"] != "CON"

    # a rerun: names are read back, nothing is rewritten or added
    mapping = (out / "doc_ids.jsonl").read_bytes()
    files = snapshot(out)
    again = annotate(make_nlp(), src, out, progress=False)
    assert again.written == 0 and again.skipped_existing == len(ok)
    assert (out / "doc_ids.jsonl").read_bytes() == mapping and snapshot(out) == files


def test_local_jsonl_keeps_every_id_exactly_and_writes_only_beside_the_output(hostile):
    sandbox, src, notes = hostile
    out = sandbox / "deep" / "out.jsonl"
    before = snapshot(sandbox)
    report = annotate(make_nlp(), src, out, output_format="jsonl", progress=False)
    written = {r["id"]: r["text"] for r in read_jsonl(out)}
    failed = {f["id"] for f in report.failed}
    assert failed <= {"\ud800lone"}  # a lone surrogate cannot be UTF-8: that note fails, alone
    assert written == {k: v for k, v in notes.items() if k not in failed}
    new = set(snapshot(sandbox)) - set(before)
    assert new <= {"deep/out.jsonl", "deep/out.errors.jsonl"}


def test_sharded_worker_brat_stays_inside_and_matches_the_record(hostile, tmp_path):
    sandbox, src, notes = hostile
    root = sandbox / "ray_out"
    before = snapshot(sandbox.parent)
    plan = pack(src, root, shard_size=7)
    brat_dir = root / "brat"
    differing = brat_names_for(list(notes), brat_dir)
    nlp = make_nlp()
    for shard in plan.shards:
        ids = [r["id"] for r in map(json.loads, plan.input_path(shard).read_text(encoding="utf8").splitlines())]
        annotate_shard(nlp, plan.input_path(shard), plan.output_path(shard, "jsonl"), brat_dir=brat_dir,
                       brat_names={i: differing[i] for i in ids if i in differing})
    assert snapshot(sandbox.parent, skip=[root]) == before
    records = [r for s in plan.shards for r in read_records(plan.output_path(s, "jsonl"))]
    assert sorted(r["id"] for r in records) == sorted(notes)
    ok = {r["id"] for r in records if r["status"] == "ok"}
    assert ok >= set(notes) - {"\ud800lone"}
    _check_brat_folder(brat_dir, notes, ok)


def test_symlink_inside_out_pointing_outside_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    src = write_jsonl(tmp_path / "in.jsonl", {"sub/x": "aspirin", "fine": "heparin"})
    report = annotate(make_nlp(), src, out, progress=False)
    assert list(outside.iterdir()) == []
    assert [f["id"] for f in report.failed] == ["sub/x"] and "outside" in report.failed[0]["error"]
    assert report.written == 1


def test_export_of_a_docbin_with_hostile_ids_stays_inside(tmp_path):
    import spacy
    from spacy.tokens import DocBin

    from spacy_softprompt.data.readers import export_docbin

    nlp = spacy.blank("en")
    docs = []
    for doc_id in ["../../x", "/abs", "", "CON", "fine"]:
        doc = nlp.make_doc("aspirin daily")
        if not doc.has_extension("brat"):
            doc.set_extension("brat", default=None)
        doc._.brat = {"version": 1, "doc_id": doc_id}
        docs.append(doc)
    DocBin(store_user_data=True, docs=docs).to_disk(tmp_path / "x.spacy")
    out = tmp_path / "a" / "b" / "export"
    before = snapshot(tmp_path)
    paths = export_docbin(tmp_path / "x.spacy", out)
    assert len(paths) == 5 and all(os.path.realpath(p).startswith(os.path.realpath(out) + os.sep) for p in paths)
    assert set(snapshot(tmp_path)) - set(before) == {str(p.relative_to(tmp_path)) for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("doc_id", ["../../x", "/etc/passwd", "", ".", "..", "CON", "aux.txt", "a" * 300, "x\x00y", "Ünïcode", "a/./b"])
def test_unsafe_ids_get_a_hashed_name_that_is_stable(doc_id):
    assert not is_plain_name(doc_id)
    name = hashed_name(doc_id)
    assert is_plain_name(name) and name == hashed_name(doc_id) and len(name) <= 80
    assert "/" not in name and ".." not in name.split("-")[0].split("/")


@pytest.mark.parametrize("doc_id", ["note-1", "train/123", "a.b_c-d", "N0TE"])
def test_plain_ids_keep_their_name(doc_id, tmp_path):
    assert is_plain_name(doc_id)
    assert FileNames(tmp_path).assign([doc_id]) == {doc_id: doc_id}


def test_names_survive_a_new_run_with_more_ids_and_a_cut_record(tmp_path):
    first = FileNames(tmp_path).assign(["a", "../b", "Case"])
    with (tmp_path / "doc_ids.jsonl").open("a", encoding="utf8") as f:
        f.write('{"id": "half')  # a kill in the middle of a record
    names = FileNames(tmp_path)
    second = names.assign(["case", "../b", "a", "Case", "new"])
    assert {k: second[k] for k in first} == first
    assert second["case"] != "case" and second["new"] == "new"
    assert [e["id"] for e in read_jsonl(tmp_path / "doc_ids.jsonl")] == ["a", "../b", "Case", "case", "new"]
