"""Recipe fingerprints (what changes them and what does not), stale rows, the
convergence rule, and the runner training a run again when its recipe changed."""
import dataclasses
import shutil
from pathlib import Path

import pytest

from spacy_softprompt.study.curve import convergence
from spacy_softprompt.study.markdown import stale_section
from spacy_softprompt.study.recipe import recipe_fingerprint, split_stale
from spacy_softprompt.study.results import read_results
from spacy_softprompt.study.runner import StudySettings, plan_runs, run_grid

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_fingerprint_ignores_seed_and_paths_but_not_the_recipe():
    soft = CONFIGS / "tok_soft_cpu.cfg"
    base = recipe_fingerprint(soft, {"system.seed": 0, "training.max_steps": 600})
    assert recipe_fingerprint(soft, {"system.seed": 2, "training.max_steps": 600, "paths.train": "other.spacy"}) == base
    assert recipe_fingerprint(soft, {"system.seed": 0, "training.max_steps": 800}) != base
    assert recipe_fingerprint(CONFIGS / "tok_soft-frozen_cpu.cfg", {"system.seed": 0, "training.max_steps": 600}) != base
    # the schedule's interpolated total_steps is the resolved value: overriding it to the same number changes nothing
    same = {"system.seed": 0, "training.max_steps": 600, "training.optimizer.learn_rate.total_steps": 600}
    assert recipe_fingerprint(soft, same) == base


def test_fingerprint_and_checkpoint_ignore_inference_batching_only():
    """``max_batch_items`` groups notes at inference and trains nothing: runs made
    with spacy-transformers' 4,096 keep their recipe and their checkpoint."""
    from spacy.util import load_config

    from spacy_softprompt.checkpoint import config_fingerprint

    soft = CONFIGS / "tok_soft_cpu.cfg"
    base = recipe_fingerprint(soft, {"system.seed": 0})
    for items in (4096, 65536, 100):
        assert recipe_fingerprint(soft, {"system.seed": 0, "components.transformer.max_batch_items": items}) == base
    assert recipe_fingerprint(soft, {"system.seed": 0, "components.transformer.model.prompt_length": 5}) != base
    config = load_config(soft)
    before = config_fingerprint(config)
    config["components"]["transformer"]["max_batch_items"] = 4096
    assert config_fingerprint(config) == before
    config["components"]["transformer"]["model"]["prompt_length"] = 5
    assert config_fingerprint(config) != before


def test_checkpoint_ignores_patience_but_the_recipe_does_not():
    """Patience only decides when a run stops: a checkpoint resumes under another
    patience, while the result row's recipe (what the run ends as) changes."""
    from spacy.util import load_config

    from spacy_softprompt.checkpoint import config_fingerprint

    soft = CONFIGS / "tok_soft_cpu.cfg"
    config = load_config(soft)
    before = config_fingerprint(config)
    config["training"]["patience"] = 0
    assert config_fingerprint(config) == before
    config["training"]["max_steps"] = 3200  # the schedule's total_steps follows: another trajectory
    assert config_fingerprint(config) != before
    assert recipe_fingerprint(soft, {"system.seed": 0, "training.patience": 0}) != recipe_fingerprint(soft, {"system.seed": 0})


def test_a_changed_config_default_keeps_the_key_and_changes_the_recipe(tmp_path, toy_corpus):
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(CONFIGS / "tok_soft-frozen_cpu.cfg", configs)
    settings = StudySettings(experiment="strategies", train=str(toy_corpus), dev=str(toy_corpus), configs_dir=str(configs))
    (before,) = plan_runs(settings, strategies=["soft-frozen"], seeds=[0])
    path = configs / "tok_soft-frozen_cpu.cfg"
    text = path.read_text(encoding="utf8")
    assert "\npatience = 800\n" in text
    path.write_text(text.replace("\npatience = 800\n", "\npatience = 900\n"), encoding="utf8")
    (after,) = plan_runs(settings, strategies=["soft-frozen"], seeds=[0])
    assert after.key == before.key and after.recipe != before.recipe


def _row(key, recipe, finished, status="ok", strategy="soft"):
    return {"key": key, "recipe": recipe, "finished_at": finished, "status": status, "strategy": strategy, "train_corpus": "t", "mode": "single", "backbone": "b"}


def test_split_stale_against_the_plan_or_the_newest_run_of_a_kind():
    rows = [_row("a", "r1", "2026-01-01"), _row("b", "r2", "2026-01-02"), _row("c", "r9", "2026-01-01", strategy="finetune")]
    fresh, stale = split_stale(rows)  # no plan: the newest soft run's recipe (r2) is current
    assert [r["key"] for r in fresh] == ["b", "c"] and [r["key"] for r in stale] == ["a"]
    fresh, stale = split_stale(rows, {"a": "r1", "b": "r1", "c": "r9"})
    assert [r["key"] for r in fresh] == ["a", "c"] and [r["key"] for r in stale] == ["b"]
    # with a plan, a row the plan does not know is stale: a moved prompt length changes the key, and
    # the old runs must not stay in the tables as the newest of their kind
    fresh, stale = split_stale(rows, {"a": "r1", "b": "r1"})
    assert [r["key"] for r in fresh] == ["a"] and [r["key"] for r in stale] == ["b", "c"]
    lines = "\n".join(stale_section(stale, {"a": "r1", "b": "r1"}))
    assert "| b | r2 | 2026-01-02 | recipe changed |" in lines and "| c | r9 | 2026-01-01 | no longer planned |" in lines


def _curve(scores, every=100):
    return [{"step": i * every, "score": s} for i, s in enumerate(scores)]


@pytest.mark.parametrize(
    "scores, converged, best_step",
    [
        ([0.0, 0.3, 0.5, 0.58, 0.60, 0.602, 0.603], True, 600),  # +0.3 points after step 450
        ([0.0, 0.2, 0.3, 0.35, 0.40, 0.45, 0.50], False, 600),  # still rising by 10 points
        ([0.0, 0.4, 0.5, 0.52, 0.53, 0.51, 0.50], True, 400),  # best inside the first three quarters
        ([0.0, 0.4, 0.5, 0.52, 0.525, 0.53, 0.527], False, 500),  # exactly 0.5 points late: not converged
    ],
)
def test_convergence_rule(scores, converged, best_step):
    result = convergence(_curve(scores))
    assert result["converged"] is converged and result["best_step"] == best_step
    assert result["cutoff_step"] == 450 and result["last_step"] == 600


def test_convergence_without_enough_points():
    assert convergence([])["converged"] is None
    assert convergence(_curve([0.0]))["converged"] is None  # step 0 only
    early_stop = convergence(_curve([0.0, 0.5, 0.6, 0.6, 0.6]))  # stopped at 400: its schedule ended there
    assert early_stop["converged"] is True and early_stop["cutoff_step"] == 300


def test_convergence_section_says_what_ended_each_flagged_run():
    """A flagged run ended by early stopping (last step before max_steps) is told apart from
    one that ran its schedule: the first wants a longer patience, not a longer schedule."""
    from spacy_softprompt.study.markdown import convergence_section

    def row(key, scores, max_steps):
        return {"key": key, "status": "ok", "max_steps": max_steps, "convergence": convergence(_curve(scores)) if scores else None}

    rows = [
        row("stopped", [0.0, 0.3, 0.4, 0.5, 0.52, 0.55, 0.58, 0.6, 0.62, 0.6, 0.7, 0.69, 0.68], 3200),  # best 1,000, stopped 1,200
        row("schedule", [0.0, 0.2, 0.3, 0.35, 0.40, 0.45, 0.50], 600),
        row("flat", [0.0, 0.4, 0.5, 0.52, 0.53, 0.51, 0.50], 600),
        row("nocurve", None, 600),
    ]
    lines = convergence_section(rows)
    table = [part for line in lines for part in line.split("\n") if part.startswith("| ")]
    assert table[0] == "| run | steps | last step | best step | late gain (points) | ended by |"
    assert "| stopped | 3200 | 1200 | 1000 | +8.0 | early stopping |" in table
    assert "| schedule | 600 | 600 | 600 | +10.0 | its schedule |" in table
    assert "| nocurve | 600 | – | – | – | – (no dev curve) |" in table
    assert not any(line.startswith("| flat ") for line in table)
    assert any(line.startswith("1 of them were ended by early stopping") for line in lines)
    assert not any("ended by early stopping" in line for line in convergence_section(rows[1:]))


def test_runner_reruns_a_run_whose_recipe_changed(tmp_path, toy_corpus):
    settings = StudySettings(experiment="strategies", train=str(toy_corpus), dev=str(toy_corpus), configs_dir=str(CONFIGS))
    (spec,) = plan_runs(settings, strategies=["soft"], backbones=["package:no_such_backbone/model"], seeds=[0])
    results, work = tmp_path / "r.jsonl", tmp_path / "work"
    run_grid([spec], results, work, isolation="inline", log=lambda m: None)  # fails fast: no such backbone
    assert run_grid([spec], results, work, isolation="inline", log=lambda m: None).skipped == 1
    changed = dataclasses.replace(spec, recipe="0" * 16)
    summary = run_grid([changed], results, work, isolation="inline", log=lambda m: None)
    assert (summary.ran, summary.stale, summary.skipped) == (1, 1, 0)
    assert [r["recipe"] for r in read_results(results)] == [spec.recipe, "0" * 16]
    # the run with the new recipe failed: it is skipped like any failed run, not retried behind the user's back
    assert run_grid([changed], results, work, isolation="inline", log=lambda m: None).skipped == 1
    # and the report shows that failure, with the old row as stale
    from spacy_softprompt.study.report import render_report

    summary = render_report(results, tmp_path / "out", plots=False, current_recipes={spec.key: "0" * 16})
    assert (summary["failed"], summary["stale"]) == (1, [])  # the old row of the key is superseded, not listed twice
