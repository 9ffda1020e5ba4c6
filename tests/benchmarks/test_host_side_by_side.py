"""benchmarks/host_side_by_side.py: the side-by-side summary (ratios per round, predictions compared)."""
import pytest


@pytest.fixture()
def module(benchmark_script):
    return benchmark_script("host_side_by_side")


def _side(host, sha, stage):
    return {"host_cpu_s_per_10k_words": host, "predictions_sha256": sha, "stages_cpu_s_per_10k_words": {"token_ner": stage}}


def test_summary_gives_ratios_per_round_and_their_median(module):
    rounds = [
        {"before": {"calibrated": _side(0.20, "a", 0.04)}, "after": {"calibrated": _side(0.10, "a", 0.02)}},
        {"before": {"calibrated": _side(0.16, "a", 0.06)}, "after": {"calibrated": _side(0.12, "a", 0.03)}},
        {"before": {"calibrated": _side(0.10, "a", 0.05)}, "after": {"calibrated": _side(0.09, "a", 0.01)}},
    ]
    summary = module.summarise(rounds, ["calibrated"])["calibrated"]
    assert summary["after_over_before_per_round"] == pytest.approx([0.5, 0.75, 0.9])
    assert summary["after_over_before_median"] == pytest.approx(0.75)
    assert summary["same_predictions"] is True
    assert summary["stages_before"]["token_ner"] == pytest.approx(0.05)
    assert summary["stages_after"]["token_ner"] == pytest.approx(0.02)


def test_a_changed_prediction_is_reported(module):
    rounds = [{"before": {"trained": _side(0.2, "a", 0.1)}, "after": {"trained": _side(0.1, "b", 0.1)}}]
    assert module.summarise(rounds, ["trained"])["trained"]["same_predictions"] is False


def test_before_is_required(module, capsys):
    with pytest.raises(SystemExit):
        module.main([])
    assert "--before" in capsys.readouterr().err


def test_before_and_malloc_exclude_each_other(module, capsys):
    with pytest.raises(SystemExit):
        module.main(["--before", "HEAD", "--malloc"])
    assert "--malloc" in capsys.readouterr().err
