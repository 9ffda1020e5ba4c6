"""benchmarks/train_malloc_bench.py: variants, their environment, the summary, and a tiny side-by-side run."""
import json
import os
import subprocess
import sys
import time

import pytest

from spacy_softprompt.testing import write_toy_corpus


@pytest.fixture()
def module(benchmark_script):
    return benchmark_script("train_malloc_bench")


def test_variants_are_default_or_a_threshold_in_glibcs_range(module):
    assert module.parse_variant(" Default ") is None
    assert module.parse_variant("4194304") == 4 * 1024 * 1024
    for bad in ("0", "-5", "4MiB", str(module.MAX_THRESHOLD + 1)):
        with pytest.raises(ValueError, match="threshold in bytes"):
            module.parse_variant(bad)


def test_each_variant_sets_or_removes_the_threshold_and_the_threads(module):
    base = {"MALLOC_MMAP_THRESHOLD_": "999", "OMP_NUM_THREADS": "8", "PATH": "/bin"}
    fixed = module.variant_env(131072, 1, base)
    assert fixed["MALLOC_MMAP_THRESHOLD_"] == "131072" and fixed["OMP_NUM_THREADS"] == "1" and fixed["PATH"] == "/bin"
    default = module.variant_env(None, 2, base)
    assert "MALLOC_MMAP_THRESHOLD_" not in default and default["MKL_NUM_THREADS"] == "2"
    assert base["MALLOC_MMAP_THRESHOLD_"] == "999"  # the caller's environment is not changed


def test_summary_takes_medians_of_the_first_and_last_thirds_and_ratios_to_the_first(module):
    samples = [(0, 0.0), (10, 100.0), (20, 300.0), (30, 200.0), (40, 900.0), (50, 700.0), (60, 800.0)]
    first = module.summarise(samples, user_s=300.0, system_s=20.0, max_rss_kb=1024 * 950, minor_faults=7)
    # the zero sample (process not yet started) is left out: thirds of [100, 300, 200, 900, 700, 800]
    assert first["median_rss_mb_first_third"] == 200 and first["median_rss_mb_last_third"] == 750
    assert first["cpu_s"] == 320.0 and first["peak_rss_mb"] == 950 and first["minor_page_faults"] == 7
    second = module.summarise(samples[:3], user_s=300.0, system_s=100.0, max_rss_kb=1024, minor_faults=9)
    rows = module.with_ratios([first, second])
    assert rows[0]["cpu_vs_first"] == 1.0 and rows[1]["cpu_vs_first"] == pytest.approx(400 / 320, abs=1e-3)


def test_tree_rss_counts_the_children(module):
    alone = module.tree_rss_mb(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while module.tree_rss_mb(child.pid) < 150 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert module.tree_rss_mb(child.pid) >= 150
        assert module.tree_rss_mb(os.getpid()) >= alone + 150
    finally:
        child.kill()
        child.wait()
    assert module.tree_rss_mb(child.pid) == 0


@pytest.mark.slow
def test_two_variants_train_side_by_side_and_report(module, tiny_megatron, tmp_path):
    corpus = write_toy_corpus(tmp_path / "toy.spacy")
    output = tmp_path / "train_malloc.json"
    status = module.main([
        "--variants", "default,131072", "--steps", "2", "--sample-seconds", "0.2",
        "--train", str(corpus), "--dev", str(corpus), "--backbone", str(tiny_megatron), "--output", str(output),
        "--", "--components.transformer.model.get_spans.window", "24", "--components.transformer.model.get_spans.stride", "16",
    ])
    assert status == 0
    report = json.loads(output.read_text())
    variants = report["variants"]
    assert [v["MALLOC_MMAP_THRESHOLD_"] for v in variants] == [None, 131072]
    assert variants[0]["cpu_vs_first"] == 1.0
    for v in variants:
        assert v["user_cpu_s"] > 0 and v["minor_page_faults"] > 0
        assert v["peak_rss_mb"] >= v["median_rss_mb_last_third"] > 0
    assert report["extra_train_options"][-1] == "16"
