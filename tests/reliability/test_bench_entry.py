"""spacy_softprompt.bench: the benchmark entry point finds the scripts and passes options on
(the benchmarks themselves are never run here: they are not tests)."""
import pytest

from spacy_softprompt import bench


def test_every_listed_benchmark_has_its_script():
    folder = bench.benchmarks_dir()
    for name, (script, _, _) in bench.BENCHMARKS.items():
        assert (folder / script).is_file(), name
    assert set(bench.ALL) <= set(bench.BENCHMARKS)


def test_options_become_flags():
    argv = bench.options_to_argv({"gt_docs": 2, "backbones": ["minilm", "tiny"], "no_wheels": True, "keep": False, "threads": None})
    assert argv == ["--gt-docs", "2", "--backbones", "minilm,tiny", "--no-wheels"]


def test_unknown_name_is_a_clear_error(capsys):
    with pytest.raises(bench.BenchmarkError, match="unknown benchmark 'warp'"):
        bench.run_bench("warp")
    assert bench.bench_command("warp") == 1
    assert "choose from" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["inference", "training", "packaging", "scaling", "baseline-hf", "baseline-cnn", "scale", "speed", "gpu", "host-side-by-side"])
def test_scripts_answer_help_without_running(name, capfd):
    assert bench.run_bench_argv(name, ["--help"]) is None
    assert "--output" in capfd.readouterr().out


def test_missing_checkout_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACY_SOFTPROMPT_BENCHMARKS", str(tmp_path / "nowhere"))
    with pytest.raises(bench.BenchmarkError, match="source checkout"):
        bench.run_bench("inference")
