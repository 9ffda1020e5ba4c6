"""Issue 22, item 3: one bad note costs one note. Over-long notes and notes that
cannot be written become failed records with the reason (never the text), the
run goes on; a rerun neither repeats them in the errors file nor blocks on
them; each output has its own errors file; ``convert`` skips a document it
cannot build (``--strict`` still stops)."""
import json

import pytest
from annotate_helpers import make_nlp, note_text, read_jsonl, write_jsonl

from spacy_softprompt.annotate import ERRORS_FILE, annotate
from spacy_softprompt.data.errors import BratError
from spacy_softprompt.scale import pack, read_records
from spacy_softprompt.scale.worker import annotate_shard

SECRET = "Zebulon Quartermaine"


def _notes(n=8):
    notes = {f"n{i}": note_text(i) for i in range(n)}
    notes["n2"] = ("aspirin " + SECRET + " ") * 300  # over max_length below
    notes["n5"] = "aspirin \ud800 " + SECRET  # not valid Unicode: cannot be written as UTF-8
    return notes


@pytest.mark.parametrize("fmt", ["jsonl", "brat"])
def test_over_long_and_unwritable_notes_fail_alone_with_a_reason(tmp_path, fmt):
    notes = _notes()
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    out = tmp_path / ("out.jsonl" if fmt == "jsonl" else "out")
    report = annotate(make_nlp(max_length=2000), src, out, output_format=fmt, batch_size=3, progress=False)
    failed = {f["id"]: f["error"] for f in report.failed}
    assert set(failed) == {"n2", "n5"} and report.written == len(notes) - 2
    assert failed["n2"].startswith("NoteTooLong: ") and str(len(notes["n2"])) in failed["n2"]
    assert "UnicodeEncodeError" in failed["n5"]
    errors_file = out / ERRORS_FILE if fmt == "brat" else tmp_path / "out.errors.jsonl"
    logged = errors_file.read_text(encoding="utf8")
    assert "Zebulon" not in logged and "Quartermaine" not in logged
    assert sorted(e["id"] for e in read_jsonl(errors_file)) == ["n2", "n5"]
    if fmt == "jsonl":
        assert sorted(r["id"] for r in read_jsonl(out)) == sorted(set(notes) - {"n2", "n5"})  # every line valid JSON


def test_a_rerun_retries_without_repeating_errors_and_drops_the_fixed(tmp_path):
    notes = {f"n{i}": note_text(i) for i in range(6)}
    notes["n1"] = "aspirin BOOM"
    notes["n4"] = "heparin BOOM"
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    out = tmp_path / "out.jsonl"
    errors_file = tmp_path / "out.errors.jsonl"
    for _ in range(3):
        report = annotate(make_nlp("reliability_boom"), src, out, output_format="jsonl", progress=False)
        assert sorted(f["id"] for f in report.failed) == ["n1", "n4"]  # retried, failed again, the run went on
        assert sorted(e["id"] for e in read_jsonl(errors_file)) == ["n1", "n4"]  # never repeated
    with errors_file.open("a", encoding="utf8") as f:
        f.write('{"id": "n1", "err')  # a line cut by a kill
    report = annotate(make_nlp(), src, out, output_format="jsonl", progress=False)  # fixed pipeline
    assert report.written == 2 and not report.failed
    assert not errors_file.exists()
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(notes)


def test_each_jsonl_output_has_its_own_errors_file(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", {"x": "aspirin BOOM", "y": "heparin"})
    good = write_jsonl(tmp_path / "good.jsonl", {"z": "warfarin"})
    annotate(make_nlp("reliability_boom"), bad, tmp_path / "a.jsonl", output_format="jsonl", progress=False)
    annotate(make_nlp("reliability_boom"), good, tmp_path / "b.jsonl", output_format="jsonl", progress=False)
    assert [e["id"] for e in read_jsonl(tmp_path / "a.errors.jsonl")] == ["x"]
    assert not (tmp_path / "b.errors.jsonl").exists() and not (tmp_path / ERRORS_FILE).exists()


def test_sharded_worker_fails_the_over_long_and_unwritable_notes_only(tmp_path):
    notes = _notes()
    plan = pack(write_jsonl(tmp_path / "in.jsonl", notes), tmp_path / "out", shard_size=4)
    nlp = make_nlp(max_length=2000)
    for shard in plan.shards:
        annotate_shard(nlp, plan.input_path(shard), plan.output_path(shard, "jsonl"), batch_size=3)
    records = {r["id"]: r for s in plan.shards for r in read_records(plan.output_path(s, "jsonl"))}
    assert set(records) == set(notes)
    assert {i for i, r in records.items() if r["status"] == "failed"} == {"n2", "n5"}
    assert records["n2"]["error"].startswith("NoteTooLong") and "Zebulon" not in json.dumps(records["n5"])


def _brat_corpus(folder, huge_chars):
    folder.mkdir()
    for name, text in {"a": "aspirin daily", "b": "x" * huge_chars, "c": "heparin twice"}.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf8")
        (folder / f"{name}.ann").write_text("T1\tDrug 0 7\t" + text[:7] + "\n", encoding="utf8")


def test_convert_skips_a_document_it_cannot_build_and_strict_stops(tmp_path, capsys):
    from spacy_softprompt.cli import main
    from spacy_softprompt.data.readers import convert_brat_dir, load_docbin

    corpus = tmp_path / "brat"
    _brat_corpus(corpus, 1_000_001)  # one character over spaCy's max_length: E088
    stats = convert_brat_dir(corpus, tmp_path / "out.spacy")
    assert stats.documents == 2 and [d.text[:7] for d in load_docbin(tmp_path / "out.spacy")] == ["aspirin", "heparin"]
    skipped = [i for i in stats.issues if i.kind == "skipped_document"]
    assert len(skipped) == 1 and skipped[0].file.endswith("b.ann") and "E088" in skipped[0].message
    assert "xxxxxxxxxx" not in str(skipped[0])
    with pytest.raises(BratError, match="b.ann.*document skipped"):
        convert_brat_dir(corpus, tmp_path / "strict.spacy", strict=True)
    assert not (tmp_path / "strict.spacy").exists()
    with pytest.raises(SystemExit) as stop:
        main(["convert", str(corpus), str(tmp_path / "strict.spacy"), "--strict"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "b.ann" in err
