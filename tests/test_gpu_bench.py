"""benchmarks/gpu_bench.py runs end to end on CPU with a tiny model and writes
sane JSON (the GPU figures come from the same script with --device cuda)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_bench.py"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="benchmarks/ not in this checkout")
def test_gpu_bench_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--layers", "1", "--hidden", "64", "--docs", "2",
           "--words", "80", "--repeats", "1", "--train-words", "160", "--train-steps", "1", "--threads", "1",
           "--workdir", str(tmp_path / "models"), "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "Per-stage time per 10k words" in result.stdout
    for config in ("soft", "soft-frozen"):
        inf = report["inference"][config]
        stages = inf["stages"]["per_10k_words_s"]
        assert stages["transformer: backbone forward"] > 0 and all(v >= 0 for v in stages.values())
        assert {"spaCy tokenizer", "transformer: wordpiece tokenization", "transformer: alignment",
                "ner: transition steps + set_annotations", "relations: candidates"} <= set(stages)
        assert inf["words"] > 100 and inf["windows"] >= 2
        for name in ("pipe", "transformer", "bare forward"):
            assert inf["throughput"][name]["words_per_s"] > 0
        # each ratio is the quotient of the run's own best times (= of the throughputs it reports)
        through = inf["throughput"]
        for ratio, name in (("pipe_vs_bare", "pipe"), ("transformer_vs_bare", "transformer")):
            assert inf["ratios"][ratio] == pytest.approx(through["bare forward"]["best_s"] / through[name]["best_s"])
            assert through[name]["best_s"] == min(through[name][f"runs_{inf['clock']}_s"])
        assert inf["alignment"]["identical"] and inf["candidates"]["identical"] and inf["dense_relations"]["identical"]
        assert "skipped" in inf["precision"]  # autocast is CUDA-only
    unfrozen, frozen = report["train"]["soft"]["checks"], report["train"]["soft-frozen"]["checks"]
    assert unfrozen["backbone_grads"] > 0 and unfrozen["backbone_optimizer_entries"] > 0
    assert frozen["backbone_grads"] == 0 and frozen["backbone_optimizer_entries"] == 0
    assert frozen["backbone_requires_grad"] == 0 and frozen["prompt_optimizer_entries"] > 0
    assert report["train"]["soft-frozen"]["s_per_step"] > 0 and report["train"]["soft"]["peak_mb"] > 0
    assert report["large"] is None  # --large: on the GPU machine
    assert set(report["targets"]) >= {"train step frozen / unfrozen", "peak memory frozen / unfrozen",
                                      "soft: nlp.pipe / bare forward", "soft-frozen: transformer / bare forward"}
