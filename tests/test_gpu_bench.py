"""benchmarks/gpu_bench.py runs end to end on CPU with a tiny model and writes
the JSON the GPU run writes (the GPU figures come from the same command with
--device cuda): the default pipeline's stages, one process and 2 worker
processes against the bare forward, unfrozen and frozen train steps."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_bench.py"
CONFIGS = ("tok_soft", "tok_soft-frozen")


@pytest.mark.skipif(not SCRIPT.is_file(), reason="benchmarks/ not in this checkout")
def test_gpu_bench_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--layers", "1", "--hidden", "64", "--docs", "4",
           "--words", "80", "--batch-size", "4", "--repeats", "1", "--train-words", "160", "--train-steps", "1", "--threads", "1",
           "--workers", "2", "--overlap-docs", "12", "--agreement-train-steps", "6", "--frozen-checkpointing", "--workdir", str(tmp_path / "models"), "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "Per-stage time per 10k words" in result.stdout
    assert set(report["inference"]) == set(CONFIGS)
    for config in CONFIGS:
        inf = report["inference"][config]
        stages = inf["stages"]["per_10k_words_s"]
        assert stages["transformer: backbone forward"] > 0 and all(v >= 0 for v in stages.values())
        assert {"spaCy tokenizer", "transformer: wordpiece tokenization", "transformer: alignment",
                "token_ner: Viterbi decoding", "token_ner: set_annotations", "relations: candidates"} <= set(stages)
        host = sum(v for k, v in stages.items() if k != "transformer: backbone forward")
        assert inf["stages"]["host_s_per_10k_words"] == pytest.approx(host)
        assert inf["words"] >= 4 * 80 and inf["windows"] >= 4  # 80 words per note, plus punctuation tokens
        for name in ("pipe", "transformer", "bare forward"):
            assert inf["throughput"][name]["words_per_s"] > 0
        workers = inf["workers"]
        assert workers["n_process"] == 2 and workers["worker_devices"] == ["cpu"] and workers["words_per_s"] > 0
        # workers get full chunks of --batch-size notes, at least four each (the 4 notes repeated to 32)
        assert workers["chunk_docs"] == 4 and workers["docs"] == 32
        assert len(workers["runs_s"]) == 2 and workers["run_s"] == min(workers["runs_s"])
        ratios = inf["ratios"]
        assert ratios["pipe_vs_bare"] == pytest.approx(
            inf["throughput"]["pipe"]["words_per_s"] / inf["throughput"]["bare forward"]["words_per_s"])
        assert ratios["workers_vs_bare"] == pytest.approx(
            workers["words_per_s"] / inf["throughput"]["bare forward"]["words_per_s"])
        # the overlapped pipe and nlp.pipe on the same 12 notes (the 4 repeated), three batches
        t = inf["throughput"]
        assert t["pipe overlapped"]["words_per_s"] > 0
        assert t["pipe overlapped"]["words_per_s"] * t["pipe overlapped"]["best_s"] == pytest.approx(3 * inf["words"])
        assert ratios["overlapped_vs_pipe"] == pytest.approx(t["pipe (overlap notes)"]["best_s"] / t["pipe overlapped"]["best_s"])
        assert "skipped" in inf["precision"]  # autocast is CUDA-only
        # before the agreement is measured again the pipeline trains; its loss falls
        training = inf["precision_trained"]["training"]
        assert training["steps"] == 6 and "skipped" in inf["precision_trained"]
        assert sum(training["loss_last"].values()) < sum(training["loss_first"].values())
        # heads calibrated to the notes' share of entity tokens: not every token an entity
        calibration = inf["calibration"]
        assert 0 < calibration["gold_entity_token_share"] < 0.5
        assert calibration["entities_predicted"] < 3 * calibration["entities_gold"]
    unfrozen, frozen = report["train"]["tok_soft"]["checks"], report["train"]["tok_soft-frozen"]["checks"]
    assert unfrozen["backbone_grads"] > 0 and unfrozen["backbone_optimizer_entries"] > 0
    assert frozen["backbone_grads"] == 0 and frozen["backbone_optimizer_entries"] == 0
    assert frozen["backbone_requires_grad"] == 0 and frozen["prompt_optimizer_entries"] > 0
    assert report["train"]["tok_soft-frozen"]["s_per_step"] > 0 and report["train"]["tok_soft"]["peak_mb"] > 0
    checkpointed = report["train"]["tok_soft-frozen (gradient checkpointing)"]
    assert checkpointed["gradient_checkpointing"] is True and checkpointed["checks"]["backbone_grads"] == 0
    assert {"train step frozen (gradient checkpointing) / unfrozen",
            "peak memory frozen (gradient checkpointing) / unfrozen"} <= set(report["targets"])
    assert report["large"] is None  # --large: on the GPU machine
    assert set(report["targets"]) >= {"train step frozen / unfrozen", "peak memory frozen / unfrozen",
                                      "tok_soft: nlp.pipe / bare forward", "tok_soft-frozen: N workers / bare forward"}
    assert report["failed_parts"] == []


@pytest.mark.skipif(not SCRIPT.is_file(), reason="benchmarks/ not in this checkout")
def test_gpu_bench_keeps_going_when_a_part_fails(tmp_path):
    """A lent GPU is one try: a part whose worker fails is recorded with its error, the other parts are
    still measured, and the results file is written."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--layers", "1", "--hidden", "64", "--docs", "2",
           "--words", "40", "--repeats", "1", "--threads", "1", "--workers", "0", "--no-train",
           "--configs", "tok_soft,tok_no-such-strategy", "--workdir", str(tmp_path / "models"), "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed_parts"] == ["inference:tok_no-such-strategy"]
    assert "tok_no-such-strategy" in report["inference"]["tok_no-such-strategy"]["error"]
    assert report["inference"]["tok_soft"]["ratios"]["pipe_vs_bare"] > 0
    assert "tok_soft: nlp.pipe / bare forward" in report["targets"]
    assert not any(name.startswith("tok_no-such-strategy") for name in report["targets"])


@pytest.mark.skipif(not SCRIPT.is_file(), reason="benchmarks/ not in this checkout")
def test_gpu_bench_half_precision_frozen_backbone_and_large_path(tmp_path):
    """--frozen-backbone-dtype adds a training step of the frozen config with its backbone in bf16
    (backbone_dtype) beside the shipped float32 one, and the --large path keeps its weights in bf16 through
    the same setting (a tiny 'large' shape on CPU)."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--layers", "1", "--hidden", "64", "--docs", "2",
           "--words", "40", "--repeats", "1", "--threads", "1", "--workers", "0", "--configs", "tok_soft-frozen",
           "--frozen-backbone-dtype", "bfloat16", "--train-words", "80", "--train-steps", "1", "--large",
           "--large-layers", "1", "--large-hidden", "64", "--large-heads", "2",
           "--workdir", str(tmp_path / "models"), "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed_parts"] == []
    assert report["train"]["tok_soft-frozen"]["checks"]["backbone_dtypes"] == ["float32"]  # the shipped config
    half = report["train"]["tok_soft-frozen (bfloat16 backbone)"]
    assert half["peak_mb"] > 0 and half["s_per_step"] > 0
    for checks in (half["checks"], report["large"]["checks"]):
        assert checks["backbone_dtypes"] == ["bfloat16"]
        assert checks["backbone_grads"] == 0 and checks["backbone_optimizer_entries"] == 0
        assert checks["prompt_optimizer_entries"] > 0
