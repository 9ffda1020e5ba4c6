"""Resumable training: a run killed after a checkpoint and resumed ends where an
uninterrupted run ends (same weights, same curve, same best checkpoint)."""
import json
from pathlib import Path

import numpy
import pytest
import torch
from spacy.training.initialize import init_nlp
from spacy.util import load_config

import spacy_softprompt  # noqa: F401  (registers the architectures without entry points)
from spacy_softprompt.checkpoint import CHECKPOINT_DIR, CheckpointError, config_fingerprint
from spacy_softprompt.study.curve import record_curve
from spacy_softprompt.testing import write_toy_corpus
from spacy_softprompt.training_loop import train_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("corpus") / "toy.spacy")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pipeline(toy: Path, backbone: Path, curve: Path, config: str = "tok_soft_cpu.cfg", **extra):
    overrides = {
        "paths.train": str(toy),
        "paths.dev": str(toy),
        "paths.backbone": str(backbone),
        "training.max_steps": 6,
        "training.eval_frequency": 2,
        "training.patience": 0,
        "components.transformer.model.get_spans.window": 24,
        "components.transformer.model.get_spans.stride": 16,
        **extra,
    }
    if config.startswith("mrc_"):  # MRC components have no span windows
        overrides = {k: v for k, v in overrides.items() if "get_spans" not in k}
    nlp = init_nlp(load_config(REPO / "configs" / config, overrides=overrides, interpolate=False), use_gpu=-1)
    record_curve(nlp, curve)
    return nlp


def _weights(nlp) -> dict:
    """Every trainable array of the pipeline by a stable name."""
    out = {}
    for name, proc in nlp.pipeline:
        for i, node in enumerate(proc.model.walk()):
            for param in node.param_names:
                if node.has_param(param):
                    out[f"{name}/{i}/{param}"] = numpy.asarray(node.get_param(param)).copy()
            for j, shim in enumerate(node.shims):
                module = getattr(shim, "_model", None)
                if module is not None:
                    for key, tensor in module.state_dict().items():
                        out[f"{name}/{i}/shim{j}/{key}"] = tensor.detach().cpu().numpy().copy()
    return out


def _kill_at(nlp, step: int) -> None:
    """Make the ``step``-th update (0-based) fail, as a kill would stop the run there."""
    calls = {"n": 0}
    update = nlp.update

    def failing_update(*args, **kwargs):
        if calls["n"] == step:
            raise RuntimeError("killed")
        calls["n"] += 1
        return update(*args, **kwargs)

    nlp.update = failing_update


def _curve(path: Path) -> list:
    # time and peak memory are measurements of the process, not of the training
    return [{k: v for k, v in p.items() if k not in ("seconds", "peak_mb")} for p in json.loads(path.read_text())]


@pytest.mark.parametrize(
    "config",
    [
        "tok_soft_cpu.cfg",
        # a frozen backbone (no backbone moments) and MRC (two prompted encoders)
        pytest.param("tok_soft-frozen_cpu.cfg", marks=pytest.mark.slow),
        pytest.param("mrc_soft_cpu.cfg", marks=pytest.mark.slow),
    ],
)
def test_a_killed_run_resumed_ends_like_an_uninterrupted_one(config, toy, tiny_megatron, tmp_path, one_thread):
    straight = _pipeline(toy, tiny_megatron, tmp_path / "a.curve.json", config)
    train_pipeline(straight, tmp_path / "a")
    expected = _weights(straight)

    killed = _pipeline(toy, tiny_megatron, tmp_path / "b.curve.json", config)
    _kill_at(killed, 5)
    with pytest.raises(RuntimeError, match="killed"):
        train_pipeline(killed, tmp_path / "b")
    state = json.loads((tmp_path / "b" / CHECKPOINT_DIR / "state.json").read_text())
    assert state["progress"]["step"] == 4  # the last evaluation before the kill
    assert [p["step"] for p in json.loads((tmp_path / "b.curve.json").read_text())] == [0, 2, 4]

    resumed = _pipeline(toy, tiny_megatron, tmp_path / "b.curve.json", config)
    train_pipeline(resumed, tmp_path / "b", resume=True)
    got = _weights(resumed)
    assert got.keys() == expected.keys()
    for name in expected:
        assert numpy.array_equal(got[name], expected[name]), name
    assert _curve(tmp_path / "b.curve.json") == _curve(tmp_path / "a.curve.json")
    assert [p["step"] for p in _curve(tmp_path / "b.curve.json")] == [0, 2, 4, 6]
    best_a = json.loads((tmp_path / "a" / "model-best" / "meta.json").read_text())["performance"]
    best_b = json.loads((tmp_path / "b" / "model-best" / "meta.json").read_text())["performance"]
    assert best_a == best_b
    assert not (tmp_path / "b" / CHECKPOINT_DIR).exists()  # a finished run keeps no checkpoint


@pytest.mark.slow
def test_a_checkpoint_of_another_config_is_refused_and_a_fresh_run_discards_it(toy, tiny_megatron, tmp_path, one_thread):
    killed = _pipeline(toy, tiny_megatron, tmp_path / "curve.json")
    _kill_at(killed, 3)
    with pytest.raises(RuntimeError, match="killed"):
        train_pipeline(killed, tmp_path / "out")
    assert (tmp_path / "out" / CHECKPOINT_DIR / "state.json").is_file()

    other = _pipeline(toy, tiny_megatron, tmp_path / "curve.json", **{"training.dropout": 0.2})
    with pytest.raises(CheckpointError, match="another config"):
        train_pipeline(other, tmp_path / "out", resume=True)

    fresh = _pipeline(toy, tiny_megatron, tmp_path / "curve.json", **{"training.max_steps": 2})
    train_pipeline(fresh, tmp_path / "out")  # no resume: starts at step 0
    assert [p["step"] for p in json.loads((tmp_path / "curve.json").read_text())] == [0, 2]
    assert not (tmp_path / "out" / CHECKPOINT_DIR).exists()


@pytest.mark.parametrize("earlier_form", [False, True])
def test_a_run_resumes_under_another_patience_and_ends_like_a_run_that_had_it(earlier_form, toy, tiny_megatron, tmp_path, one_thread):
    """Patience decides when a run stops, not what a step does: a checkpoint written
    with one patience is the same state another patience reaches at that step. Also for
    a checkpoint fingerprinted the earlier way, with patience in (``earlier_form``)."""
    straight = _pipeline(toy, tiny_megatron, tmp_path / "a.curve.json")  # patience 0: runs all 6 steps
    train_pipeline(straight, tmp_path / "a")
    expected = _weights(straight)

    killed = _pipeline(toy, tiny_megatron, tmp_path / "b.curve.json", **{"training.patience": 100})
    _kill_at(killed, 5)
    with pytest.raises(RuntimeError, match="killed"):
        train_pipeline(killed, tmp_path / "b")
    if earlier_form:
        state_path = tmp_path / "b" / CHECKPOINT_DIR / "state.json"
        state = json.loads(state_path.read_text())
        state["config"] = config_fingerprint(killed.config, untrained=("logger",))
        state_path.write_text(json.dumps(state))
        other = _pipeline(toy, tiny_megatron, tmp_path / "b.curve.json", **{"training.dropout": 0.2})
        with pytest.raises(CheckpointError, match="another config"):
            train_pipeline(other, tmp_path / "b", resume=True)

    resumed = _pipeline(toy, tiny_megatron, tmp_path / "b.curve.json")
    train_pipeline(resumed, tmp_path / "b", resume=True)
    got = _weights(resumed)
    for name in expected:
        assert numpy.array_equal(got[name], expected[name]), name
    assert [p["step"] for p in _curve(tmp_path / "b.curve.json")] == [0, 2, 4, 6]
