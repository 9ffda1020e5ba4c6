"""annotate_on_ray on a local 2-CPU Ray cluster (one per module; one logical GPU
for the GPU path's wiring): exactly once through a killed worker, a failed run
and reruns; same records as the local engine."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'spacy-softprompt[scale]' to run the Ray engine tests")
pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install 'spacy-softprompt[scale]'")

from typer.testing import CliRunner  # noqa: E402

from spacy_softprompt.cli import app, main  # noqa: E402
from spacy_softprompt.scale import DuplicateNoteIdError, ScaleError, annotate_on_ray, load_plan, read_records  # noqa: E402
from spacy_softprompt.scale.ray_engine import BRAT_DIR  # noqa: E402
from spacy_softprompt.scale.verify import SUCCESS  # noqa: E402

from scale_helpers import COMPONENTS, save_pipeline, synthetic_notes, write_jsonl  # noqa: E402

N_NOTES = 300


# Set before the cluster starts (its processes read them): no usage-stats report (no network);
# workers at the driver's priority (Ray's default niceness 15 starves them on a busy machine).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local cluster for the module, fit for a sandbox: loopback only, no dashboard,
    a small object store (a small /dev/shm is enough)."""
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def notes():
    notes = synthetic_notes(N_NOTES)
    notes["note-0042"] = "Started aspirin 5 mg. BOOM"
    notes["note-0260"] = "Started heparin 5 mg. CRASH"  # shard 5 of 6
    return notes


def annotate_locally_in_a_fresh_process(model, src, out):
    """The local engine in a new process, as each Ray worker is: spaCy's extension registry is
    process-wide, and other tests in this one (medspaCy's ConText) may have added span attributes
    that the local engine then writes (``is_negated``...)."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import spacy
        from spacy.util import import_file
        import_file("scale_components", {str(COMPONENTS)!r})
        from spacy_softprompt.annotate import annotate
        annotate(spacy.load({str(model)!r}), Path({str(src)!r}), Path({str(out)!r}), output_format="jsonl", progress=False)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf8").splitlines())}


def output_records(root):
    plan = load_plan(root)
    return [r for s in plan.shards for r in read_records(plan.output_path(s, "jsonl"))]


def test_killed_worker_is_restarted_every_note_exactly_once_same_as_local(notes, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    flag = tmp_path / "killed-once"
    model = save_pipeline(tmp_path / "pipeline", kill_flag=flag, once=True)
    # overlap: each worker runs its next batch's front in a background thread (same output)
    result = annotate_on_ray(model, src, tmp_path / "out", workers=2, shard_size=50, code=COMPONENTS,
                             brat=True, progress=False, overlap=True)
    assert flag.exists()  # a worker died mid-shard (on note-0260) and Ray redid the shard
    assert (result["notes"], result["ok"], result["failed"], result["shards"]) == (N_NOTES, N_NOTES - 1, 1, 6)
    assert result["run"]["shards_done"] == 6 and result["run"]["notes_done"] == N_NOTES
    records = output_records(tmp_path / "out")
    assert sorted(r["id"] for r in records) == sorted(notes)  # once each, none missing
    failed = [r for r in records if r["status"] == "failed"]
    assert [r["id"] for r in failed] == ["note-0042"] and "Started" not in failed[0]["error"]
    assert len(list((tmp_path / "out" / BRAT_DIR).glob("*.ann"))) == N_NOTES - 1

    local_model = save_pipeline(tmp_path / "local_pipeline")
    local = annotate_locally_in_a_fresh_process(local_model, src, tmp_path / "local.jsonl")
    keys = ("text", "entities", "relations")
    assert {r["id"]: {k: r[k] for k in keys} for r in records if r["status"] == "ok"} == {
        i: {k: r[k] for k in keys} for i, r in local.items()
    }


def test_failed_run_then_rerun_resumes_without_duplicates(notes, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", notes)
    flag = tmp_path / "disarmed"
    model = save_pipeline(tmp_path / "pipeline", kill_flag=flag, once=False)  # kills its worker until disarmed
    with pytest.raises(ScaleError, match="rerun to resume") as info:
        annotate_on_ray(model, src, tmp_path / "out", workers=2, shard_size=50, code=COMPONENTS,
                        max_worker_restarts=0, progress=False)
    assert "CRASH" not in str(info.value)
    assert not (tmp_path / "out" / SUCCESS).exists()
    flag.touch()
    result = annotate_on_ray(model, src, tmp_path / "out", workers=2, shard_size=50, code=COMPONENTS, progress=False)
    run = result["run"]
    assert run["shards_skipped"] + run["shards_done"] == 6 and run["shards_done"] >= 1
    assert sorted(r["id"] for r in output_records(tmp_path / "out")) == sorted(notes)
    assert json.loads((tmp_path / "out" / SUCCESS).read_text())["notes"] == N_NOTES

    # a driver killed mid-run: two outputs gone, a temp file left; only those two are redone
    plan = load_plan(tmp_path / "out")
    for shard in plan.shards[1:3]:
        out = plan.output_path(shard, "jsonl")
        out.unlink()
        (out.parent / f".{out.name}.12345.partial").write_text('{"id": "note-0', encoding="utf8")
    runner = CliRunner()
    again = runner.invoke(app, ["annotate", str(model), str(src), str(tmp_path / "out"), "--engine", "ray", "--workers", "2",
                                "--shard-size", "50", "--code", str(COMPONENTS), "--format", "jsonl", "-q"])
    assert again.exit_code == 3, again.output  # 3: some notes failed (note-0042)
    assert "verified 300 notes in 6 shards: ok 299, failed 1 (this run: 2 shards done, 4 already there" in again.output
    assert sorted(r["id"] for r in output_records(tmp_path / "out")) == sorted(notes)
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_duplicate_ids_are_refused_before_any_work(tmp_path, pipeline, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "aspirin"}\n{"id": "a", "text": "heparin"}\n', encoding="utf8")
    with pytest.raises(DuplicateNoteIdError, match="'a' appears twice"):
        annotate_on_ray(pipeline, src, tmp_path / "out", progress=False)
    with pytest.raises(SystemExit) as stop:
        main(["annotate", str(pipeline), str(src), str(tmp_path / "out"), "--engine", "ray"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: note id 'a' appears twice") and "aspirin" not in err
    assert not (tmp_path / "out" / "output").exists()


def test_gpu_workers_are_given_a_gpu_and_call_require_gpu(tmp_path, pipeline):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a real GPU is present: this test checks the wiring on a CPU-only machine")
    src = write_jsonl(tmp_path / "in.jsonl", synthetic_notes(5))
    with pytest.raises(ScaleError, match=r"worker setup failed: given GPU \[0\] but spacy.require_gpu failed"):
        annotate_on_ray(pipeline, src, tmp_path / "out", workers=1, gpus_per_worker=0.5, progress=False)


def test_hostile_ids_with_brat_stay_inside_the_output_and_are_mapped(tmp_path, pipeline):
    """Ids that are traversals, absolute paths, empty, reserved or over-long: the Ray
    engine's brat files all land in OUT/brat under the names doc_ids.jsonl records."""
    outside = tmp_path / "outside"
    ids = ["../../x", "../outside/y", str(outside / "abs"), "", ".", "..", "CON", "a" * 300, "n\x00ul", "Dup", "dup", "fine"]
    src = write_jsonl(tmp_path / "in.jsonl", {doc_id: f"Started aspirin {i} mg" for i, doc_id in enumerate(ids)})
    before = sorted(p for p in tmp_path.rglob("*"))
    result = annotate_on_ray(pipeline, src, tmp_path / "run" / "out", workers=1, shard_size=5, brat=True,
                             code=COMPONENTS, progress=False)
    assert (result["notes"], result["ok"]) == (len(ids), len(ids))
    out = tmp_path / "run" / "out"
    assert sorted(p for p in tmp_path.rglob("*") if out not in p.parents and p != out and p != out.parent) == before
    brat = out / BRAT_DIR
    names = {e["id"]: e["file"] for e in map(json.loads, (brat / "doc_ids.jsonl").read_text(encoding="utf8").splitlines())}
    assert set(names) == set(ids) and len({n.lower() for n in names.values()}) == len(ids)
    assert names["fine"] == "fine" and names["Dup"] == "Dup" and names["dup"] != "dup"
    for i, doc_id in enumerate(ids):
        assert (brat / (names[doc_id] + ".txt")).read_text(encoding="utf8") == f"Started aspirin {i} mg"
        assert (brat / (names[doc_id] + ".ann")).is_file()
    assert not (out / ".annotate.lock").exists()


def test_a_held_output_is_refused_before_any_work(tmp_path, pipeline):
    from spacy_softprompt.safe_io import LOCK_FILE, OutputLock, OutputLockedError

    src = write_jsonl(tmp_path / "in.jsonl", synthetic_notes(3))
    with OutputLock(tmp_path / "out" / LOCK_FILE):
        with pytest.raises(OutputLockedError, match="another annotate run is writing here"):
            annotate_on_ray(pipeline, src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "input").exists()
