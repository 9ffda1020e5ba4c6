"""benchmarks/mrc_bench.py --trained: both saved pipelines run over the same
notes' texts in one process and are reported with the same word count."""
import json
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin

from test_mrc_helpers import TOY, examples, make_nlp, one_torch_thread  # noqa: F401

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_trained_comparison_times_both_pipelines_on_the_same_notes(tiny_megatron, tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import mrc_bench
    finally:
        sys.path.remove(str(BENCHMARKS))
    mrc = make_nlp(tiny_megatron, ner={"query_mode": "soft"}, rel={"query_mode": "soft"})
    mrc.initialize(lambda: examples(mrc))
    mrc.to_disk(tmp_path / "mrc")
    single = mrc_bench.build("single_ner", str(tiny_megatron), [mrc_bench.note(30, k) for k in range(2)], window=48)
    single.to_disk(tmp_path / "single")
    texts = [t for t, _ in TOY] * 2
    db = DocBin(docs=[spacy.blank("en").make_doc(t) for t in texts])
    db.to_disk(tmp_path / "dev.spacy")

    out = tmp_path / "result.json"
    assert mrc_bench.main(["--trained", str(tmp_path / "single"), str(tmp_path / "mrc"),
                           "--docs", str(tmp_path / "dev.spacy"), "--repeats", "1", "--batch-size", "2",
                           "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    words = sum(len(mrc.make_doc(t)) for t in texts)
    assert report["n_docs"] == len(texts)
    assert {k: v["words"] for k, v in report["results"].items()} == {"single": words, "mrc": words}
    ratio = report["results"]["single"]["words_per_s"] / report["results"]["mrc"]["words_per_s"]
    assert abs(report["single_over_mrc"] - ratio) < 0.01
