"""compare: mean ± sd over seeds and the paired bootstrap of two systems' metrics files."""
import json

import pytest
from typer.testing import CliRunner

from spacy_softprompt.cli import app
from spacy_softprompt.compare import compare_files, format_comparison
from spacy_softprompt.scoring import count_document

GOLD = [[(0, 5, "Drug"), (10, 15, "Dose")], [(0, 4, "Drug")], [(3, 9, "Drug"), (20, 25, "Dose")], [(1, 2, "Dose")]]


def _metrics(path, predictions, order=(0, 1, 2, 3), ids=("n1", "n2", "n3", "n4")):
    """A metrics JSON as `evaluate --output` writes it (scores + per_doc), documents
    written in ``order`` (document i has id ``ids[i]``)."""
    from spacy_softprompt.per_doc import per_doc_record
    from spacy_softprompt.scoring import N2C2Counts

    counts = [count_document({"entities": GOLD[i]}, {"entities": predictions[i]}) for i in order]
    ids = [ids[i] for i in order]
    total = N2C2Counts()
    for c in counts:
        total += c
    data = dict(total.scores(), per_doc=per_doc_record(list(ids), counts))
    path.write_text(json.dumps(data), encoding="utf8")
    return path


def _files(tmp_path):
    perfect = _metrics(tmp_path / "a0.json", GOLD)
    half = _metrics(tmp_path / "a1.json", [GOLD[0][:1], GOLD[1], GOLD[2][:1], GOLD[3]])
    weak = [GOLD[0][:1], [], GOLD[2][:1], []]
    worse = _metrics(tmp_path / "b0.json", weak)
    reordered = _metrics(tmp_path / "b1.json", weak, order=(3, 1, 0, 2))  # paired by id, not by position
    return [perfect, half], [worse, reordered]


def test_compare_files_means_and_interval(tmp_path):
    a, b = _files(tmp_path)
    result = compare_files(a, b, names=["soft", "hf"], n_resamples=500)
    ents = result["metrics"]["ents_strict"]
    # a: F1 1.0 and 2*4/(4+6)=0.8; b0: 2*2/(2+6)=0.5
    assert ents["a"]["mean"] == pytest.approx(0.9) and ents["a"]["n"] == 2
    assert ents["a"]["sd"] == pytest.approx(0.1414213, rel=1e-5)
    boot = ents["bootstrap"]
    # pooled seeds: A tp 10 of pred 10, gold 12 -> 20/22; B tp 4 -> 8/16; A ahead on every document
    assert boot["f1_a"] == pytest.approx(20 / 22) and boot["f1_b"] == pytest.approx(0.5)
    assert boot["low"] > 0 and boot["n_docs"] == 4 and boot["n_runs_a"] == 2
    assert result["metrics"]["rels_strict"]["bootstrap"]["observed"] == 0.0  # no relations anywhere
    text = format_comparison(result)
    assert "soft - hf [95% CI]" in text and "90.0 ± 14.1 (n=2)" in text and "4 documents" in text


def test_compare_command(tmp_path):
    a, b = _files(tmp_path)
    args = ["compare", *map(str, a), "--vs", *map(str, b), "--names", "soft,hf", "--resamples", "200", "-o", str(tmp_path / "c.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ents strict F1" in result.output and "soft - hf" in result.output
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["metrics"]["ents_strict"]["bootstrap"]["n_resamples"] == 200
    again = CliRunner().invoke(app, args)
    assert again.output == result.output  # seeded: deterministic
    bad = CliRunner().invoke(app, ["compare", str(a[0]), str(b[0])])
    assert bad.exit_code == 2 and "--vs" in bad.output


def test_compare_without_per_doc_still_gives_the_means(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"ents_strict_f": 0.5, "rels_strict_f": 0.25}), encoding="utf8")
    a, _ = _files(tmp_path)
    result = compare_files([a[0]], [old])
    assert result["metrics"]["ents_strict"]["b"] == {"mean": 0.5, "sd": None, "n": 1}
    assert result["metrics"]["ents_strict"]["bootstrap"] is None
    assert "no per-document counts" in format_comparison(result)
    other_docs = _metrics(tmp_path / "x.json", GOLD, ids=("n1", "n2", "n3", "zz"))
    assert "documents differ" in compare_files([a[0]], [other_docs])["bootstrap_error"]


def test_a_baseline_without_relations_is_compared_on_entities_only(tmp_path):
    a, b = _files(tmp_path)
    data = json.loads(b[0].read_text())
    baseline = {"per_doc": {k: v for k, v in data["per_doc"].items() if not k.startswith("rels")}}
    (tmp_path / "base.json").write_text(json.dumps(baseline), encoding="utf8")
    result = compare_files(a, [tmp_path / "base.json"], n_resamples=100)
    assert result["bootstrap_error"] is None
    assert result["metrics"]["ents_strict"]["b"]["mean"] == pytest.approx(0.5)  # computed from per_doc
    assert result["metrics"]["ents_strict"]["bootstrap"]["low"] > 0
    assert result["metrics"]["rels_strict"]["bootstrap"] is None and result["metrics"]["rels_strict"]["b"]["n"] == 0
    assert result["metrics"]["rels_strict"]["missing"] == {"a": [], "b": [str(tmp_path / "base.json")]}
    assert result["metrics"]["ents_strict"]["missing"] == {"a": [], "b": []}
    text = format_comparison(result)
    assert "rels strict F1, rels lenient F1: missing in B (base.json); not compared" in text
    assert "paired bootstrap over 4 documents" in text
    cli = CliRunner().invoke(app, ["compare", *map(str, a), "--vs", str(tmp_path / "base.json"), "--resamples", "50"])
    assert cli.exit_code == 0 and "missing in B (base.json)" in cli.output


def test_nothing_is_reported_missing_when_every_file_has_every_metric(tmp_path):
    a, b = _files(tmp_path)
    result = compare_files(a, b, n_resamples=50)
    assert all(e["missing"] == {"a": [], "b": []} for e in result["metrics"].values())
    assert "missing" not in format_comparison(result)
