"""`python -m spacy_softprompt train --curve FILE`: the dev curve beside the console log."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spacy_softprompt.study.curve import convergence
from spacy_softprompt.testing import write_toy_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_writes_the_dev_curve_and_keeps_the_console_log(tiny_megatron, tmp_path):
    corpus = write_toy_corpus(tmp_path / "toy.spacy")
    curve = tmp_path / "runs" / "curve.json"
    cmd = [
        sys.executable, "-m", "spacy_softprompt", "train", str(REPO / "configs" / "tok_soft-frozen_cpu.cfg"),
        "--output", str(tmp_path / "out"), "--curve", str(curve),
        "--paths.train", str(corpus), "--paths.dev", str(corpus), "--paths.backbone", str(tiny_megatron),
        "--training.max_steps", "4", "--training.eval_frequency", "2",
        "--components.transformer.model.get_spans.window", "24", "--components.transformer.model.get_spans.stride", "16",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    points = json.loads(curve.read_text())
    assert [p["step"] for p in points] == [0, 2, 4]
    assert all(0.0 <= p["ents_strict_f"] <= 1.0 and "rels_strict_f" in p and p["seconds"] >= 0 for p in points)
    assert convergence(points)["last_step"] == 4
    # the config's own console logger still prints its table
    assert "ENTS_STRICT_F" in result.stdout.upper() or "ents_strict_f" in result.stdout
    assert (tmp_path / "out" / "model-best" / "meta.json").is_file()


@pytest.mark.slow
def test_train_resume_refuses_a_checkpoint_of_another_config_in_one_line(tiny_megatron, tmp_path):
    corpus = write_toy_corpus(tmp_path / "toy.spacy")
    checkpoint = tmp_path / "out" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"format": 1, "config": "0" * 64, "progress": {"step": 2}}))
    cmd = [
        sys.executable, "-m", "spacy_softprompt", "train", str(REPO / "configs" / "tok_soft_cpu.cfg"),
        "--output", str(tmp_path / "out"), "--resume",
        "--paths.train", str(corpus), "--paths.dev", str(corpus), "--paths.backbone", str(tiny_megatron),
        "--training.max_steps", "2", "--training.eval_frequency", "2",
        "--components.transformer.model.get_spans.window", "24", "--components.transformer.model.get_spans.stride", "16",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 2, (result.stdout + result.stderr)[-4000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "another config" in result.stderr
    assert "Traceback" not in result.stderr
    # without --resume the old checkpoint is discarded and the run trains from step 0
    fresh = subprocess.run([c for c in cmd if c != "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert fresh.returncode == 0, (fresh.stdout + fresh.stderr)[-4000:]
    assert not checkpoint.exists() and (tmp_path / "out" / "model-best" / "meta.json").is_file()
