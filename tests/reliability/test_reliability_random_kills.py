"""Issue 22, item 6: randomized. Random note ids (hostile characters, case twins,
over-long), random sizes (empty to over ``max_length``), an annotate run killed
with SIGKILL at random moments, then a rerun: every note exactly once (written
or failed with a reason), nothing outside OUT, no temporary file left."""
import json
import multiprocessing
import os
import random
import signal
import time

import pytest
from annotate_helpers import HOSTILE_IDS, brat_map, make_nlp, read_jsonl, snapshot, write_jsonl

from spacy_softprompt.annotate import annotate
from spacy_softprompt.safe_io import is_plain_name

FORK = multiprocessing.get_context("fork")
MAX_LENGTH = 4000
ALPHABET = "aZ09/._-\\ \x00é~:*?<>|\t" + "\U0001f600"


def random_notes(rng: random.Random, n: int):
    ids = set()
    while len(ids) < n:
        roll = rng.random()
        if roll < 0.15:
            doc_id = rng.choice(HOSTILE_IDS) + rng.choice(["", str(rng.randint(0, 9))])
        elif roll < 0.2:
            doc_id = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(250, 400)))
        else:
            doc_id = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        ids.add(doc_id)
        if rng.random() < 0.1:
            ids.add(doc_id.upper())  # a case twin
    notes = {}
    for doc_id in sorted(ids, key=lambda _: rng.random()):
        size = rng.choice([0, rng.randint(1, 60), rng.randint(60, 3000), MAX_LENGTH + rng.randint(1, 500)])
        words = ("aspirin", "heparin", "daily", "mg", "x", "é", "\n", "  ")
        text = ""
        while len(text) < size:
            text += rng.choice(words) + " "
        notes[doc_id] = text[:size]
    return notes


def _run(src, out, fmt):
    os.environ["RELIABILITY_SLOW_SECONDS"] = "0.003"
    annotate(make_nlp("reliability_slow", max_length=MAX_LENGTH), src, out, output_format=fmt, batch_size=4, progress=False)
    os._exit(0)


@pytest.mark.parametrize("seed,fmt", [(1, "jsonl"), (2, "brat"), (3, "brat"), (4, "jsonl")])
def test_random_ids_sizes_and_kills_then_a_rerun_write_every_note_once(tmp_path, seed, fmt):
    rng = random.Random(seed)
    notes = random_notes(rng, 70)
    sandbox = tmp_path / "sandbox"
    (sandbox / "a" / "b").mkdir(parents=True)
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    out = sandbox / "a" / "b" / ("out.jsonl" if fmt == "jsonl" else "out")
    before = snapshot(tmp_path)

    kills = 0
    for _ in range(rng.randint(2, 4)):
        child = FORK.Process(target=_run, args=(src, out, fmt))
        child.start()
        time.sleep(rng.uniform(0.0, 0.6))
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.join(30)
    report = annotate(make_nlp(max_length=MAX_LENGTH), src, out, output_format=fmt, progress=False)

    too_long = {i for i, t in notes.items() if len(t) > MAX_LENGTH}
    failed = {f["id"]: f["error"] for f in report.failed}
    assert set(failed) >= too_long and all(failed[i].startswith("NoteTooLong") for i in too_long)
    assert set(failed) - too_long <= {i for i in notes if not is_plain_name(i)}  # only invalid-Unicode ids, for JSONL
    ok = set(notes) - set(failed)
    assert report.written + report.skipped_existing == len(ok)

    if fmt == "jsonl":
        ids = [r["id"] for r in read_jsonl(out)]
        assert len(ids) == len(set(ids)) and set(ids) == ok  # exactly once
        assert all(r["text"] == notes[r["id"]] for r in read_jsonl(out))
        errors_file = out.with_name("out.errors.jsonl")
        allowed_outside = {"sandbox/a/b/out.jsonl", "sandbox/a/b/out.errors.jsonl"}
        changed = set(snapshot(tmp_path)) - set(before)
        assert changed <= allowed_outside
    else:
        names = brat_map(out)
        assert set(names) == set(notes) - {i for i in failed if i not in names}
        assert len({n.lower() for n in names.values()}) == len(names)
        written = {i for i, n in names.items() if (out / (n + ".ann")).is_file()}
        assert written == ok
        assert all((out / (names[i] + ".txt")).read_text(encoding="utf8") == notes[i] for i in ok)
        ann_files = [p for p in out.rglob("*.ann")]
        assert len(ann_files) == len(ok)  # no stray or doubled file
        errors_file = out / "annotate_errors.jsonl"
        assert snapshot(tmp_path, skip=[out]) == before
    if failed:
        logged = [json.loads(line)["id"] for line in errors_file.read_text(encoding="utf8").splitlines()]
        assert sorted(logged) == sorted(failed)  # one line per failed note, after every kill
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".partial") or p.name.endswith(".lock")]
    assert leftovers == []
