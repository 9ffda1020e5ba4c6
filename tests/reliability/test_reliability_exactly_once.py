"""Issue 22, item 2: exactly once, always. Duplicate ids are refused by the local
engine (naming the id and both places); one run per output (a lock with the
owner's pid, taken over when the owner is gone); temporary names unique per
process and thread, so two writers never share one."""
import multiprocessing
import os
import signal
import threading

import pytest
from annotate_helpers import make_nlp, note_text, read_jsonl, write_jsonl

from spacy_softprompt.annotate import annotate
from spacy_softprompt.safe_io import (
    DuplicateNoteIdError,
    OutputLock,
    OutputLockedError,
    atomic_write,
    lock_path_for,
    temporary_name,
)

FORK = multiprocessing.get_context("fork")


def test_local_engine_refuses_duplicate_ids_naming_both_lines_before_writing(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "aspirin one"}\n{"id": "b", "text": "x"}\n{"id": "a", "text": "aspirin two"}\n',
                   encoding="utf8")
    for fmt, out in (("jsonl", tmp_path / "out.jsonl"), ("brat", tmp_path / "out")):
        with pytest.raises(DuplicateNoteIdError) as info:
            annotate(make_nlp(), src, out, output_format=fmt, progress=False)
        message = str(info.value)
        assert "'a'" in message and "in.jsonl line 1 and in.jsonl line 3" in message and "aspirin" not in message
        assert not out.exists() or not [p for p in out.rglob("*") if p.suffix in (".ann", ".txt")]
    assert not (tmp_path / "out.jsonl").exists()


def test_a_second_run_is_refused_while_the_first_holds_the_output(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", {f"n{i}": note_text(i) for i in range(5)})
    out = tmp_path / "out"
    with OutputLock(lock_path_for(out, False)):
        with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()} on"):
            annotate(make_nlp(), src, out, progress=False)
    assert not list(out.glob("*.ann"))
    assert annotate(make_nlp(), src, out, progress=False).written == 5  # released: the next run goes on
    assert not (out / ".annotate.lock").exists()


def _hold_lock(path, ready, release):
    with OutputLock(path):
        ready.set()
        release.wait(30)


def test_lock_of_a_killed_owner_is_taken_over_and_a_live_one_is_not(tmp_path):
    path = lock_path_for(tmp_path / "out.jsonl", True)
    ready, release = FORK.Event(), FORK.Event()
    owner = FORK.Process(target=_hold_lock, args=(path, ready, release))
    owner.start()
    assert ready.wait(20)
    with pytest.raises(OutputLockedError, match=rf"pid {owner.pid} on"):
        OutputLock(path).acquire()
    os.kill(owner.pid, signal.SIGKILL)  # the owner dies holding the lock: its file stays behind
    owner.join(10)
    assert path.exists()
    with OutputLock(path):  # stale: taken over
        assert f'"pid": {os.getpid()}' in path.read_text()


def _annotate_child(src, out, fmt):
    os.environ["RELIABILITY_SLOW_SECONDS"] = "0.01"
    try:
        annotate(make_nlp("reliability_slow"), src, out, output_format=fmt, batch_size=4, progress=False)
    except OutputLockedError:
        os._exit(9)
    os._exit(0)


@pytest.mark.parametrize("fmt", ["jsonl", "brat"])
def test_two_runs_started_together_write_every_note_once(tmp_path, fmt):
    notes = {f"n{i:03d}": note_text(i) for i in range(60)}
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    out = tmp_path / ("out.jsonl" if fmt == "jsonl" else "out")
    runs = [FORK.Process(target=_annotate_child, args=(src, out, fmt)) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    codes = sorted(run.exitcode for run in runs)
    assert codes in ([0, 0], [0, 9])  # the second either found the work done or was refused
    if fmt == "jsonl":
        ids = [r["id"] for r in read_jsonl(out)]
    else:
        ids = [p.stem for p in out.glob("*.ann")]
    assert sorted(ids) == sorted(notes)


def _write_many(path, tag, rounds):
    for i in range(rounds):
        atomic_write(path, (f"{tag}:{i}:" + tag * 2000).encode())
    os._exit(0)


def test_atomic_writer_two_processes_and_a_reader_never_see_half_a_file(tmp_path):
    path = tmp_path / "shared.txt"
    atomic_write(path, b"start")
    writers = [FORK.Process(target=_write_many, args=(path, tag, 150)) for tag in "AB"]
    for writer in writers:
        writer.start()
    seen = 0
    while any(w.is_alive() for w in writers):
        data = path.read_bytes()  # never missing, never partial
        assert data == b"start" or (data[:2] in (b"A:", b"B:") and len(data) == data.index(b":", 2) + 1 + 2000)
        seen += 1
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert seen > 0 and [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


def test_temporary_names_differ_between_threads_and_calls(tmp_path):
    names = set()

    def take():
        for _ in range(50):
            names.add(temporary_name(tmp_path / "x.ann"))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(names) == 200
    assert all(n.name.startswith(".x.ann.") and n.name.endswith(".partial") and str(os.getpid()) in n.name for n in names)


def test_a_failed_write_leaves_neither_temp_file_nor_changed_target(tmp_path):
    target = tmp_path / "t.txt"
    atomic_write(target, "old")

    class Boom(Exception):
        pass

    from spacy_softprompt.safe_io import atomic_path

    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise Boom()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_stray_partial_files_are_cleaned_on_the_next_run(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", {"a": "aspirin", "b": "heparin"})
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.ann.partial").write_text("T1\tDrug 0")  # the old writer's name
    (out / "sub" / ".b.txt.123.456.abcd.partial").write_text("half")
    (tmp_path / ".out.jsonl.99.1.ff.partial").write_text("half")
    (tmp_path / "user.partial").write_text("not ours")  # beside a JSONL output: only its own are removed
    annotate(make_nlp(), src, out, progress=False)
    annotate(make_nlp(), src, tmp_path / "out.jsonl", output_format="jsonl", progress=False)
    assert not list(out.rglob("*.partial")) and not (tmp_path / ".out.jsonl.99.1.ff.partial").exists()
    assert (tmp_path / "user.partial").exists()


def test_an_output_inside_the_input_folder_or_the_input_itself_is_refused(tmp_path, capsys):
    from spacy_softprompt.cli import main

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("aspirin", encoding="utf8")
    src = write_jsonl(tmp_path / "in.jsonl", {"a": "aspirin"})
    for source, out, fmt in ((notes, notes / "out", "brat"), (notes, notes, "brat"), (src, src, "jsonl")):
        with pytest.raises(SystemExit) as stop:
            main(["annotate", "/nonexistent/model", str(source), str(out), "-f", fmt])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and ("inside the input folder" in err or "the input itself" in err)
    assert [p.name for p in notes.iterdir()] == ["a.txt"]
    # a JSONL output inside the input folder is fine: only .txt files are read as notes
    annotate(make_nlp(), notes, notes / "out.jsonl", output_format="jsonl", progress=False)
    assert annotate(make_nlp(), notes, notes / "out.jsonl", output_format="jsonl", progress=False).skipped_existing == 1


def test_a_byte_order_mark_does_not_cost_the_first_note(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + b'{"id": "a", "text": "aspirin"}\n{"id": "b", "text": "heparin"}\n')
    report = annotate(make_nlp(), src, tmp_path / "out.jsonl", output_format="jsonl", progress=False)
    assert report.written == 2 and not report.failed
