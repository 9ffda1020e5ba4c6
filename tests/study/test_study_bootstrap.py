"""The report's paired bootstrap table and seed counts, from synthetic per-document counts."""
import pytest

import synthetic
from spacy_softprompt.study.labels import pct, seed_note
from spacy_softprompt.study.report import render_report
from spacy_softprompt.study.stats import make_stat
from spacy_softprompt.study.tables import strategy_bootstrap

DOCS = 8


def _rows():
    rows = []
    for seed in (0, 1, 2):
        # soft finds more entities than hard and finetune on every document; relations identical
        soft = synthetic.per_doc([3, 4, 3, 3, 4, 3, 3, 4], [1] * DOCS)
        base = synthetic.per_doc([2, 2, 1, 2, 3, 2, 2, 3], [1] * DOCS)
        rows.append(synthetic.with_per_doc(synthetic.row("strategies", "soft", seed, 0.67, 0.4), soft))
        rows.append(synthetic.with_per_doc(synthetic.row("strategies", "hard", seed, 0.44, 0.4), base))
        rows.append(synthetic.with_per_doc(synthetic.row("strategies", "finetune", seed, 0.44, 0.4), base))
    return rows


def test_best_strategy_against_the_others():
    items = strategy_bootstrap(_rows(), n_resamples=300)
    assert [(i["best"], i["other"], i["n_best"], i["n_other"]) for i in items] == [
        ("soft", "finetune", 3, 3),
        ("soft", "hard", 3, 3),
    ]
    for item in items:
        ents, rels = item["results"]["ents_strict"], item["results"]["rels_strict"]
        # entities: better on every document -> interval above 0; F1 = 2tp / (pred + gold) = 54/72 vs 34/72
        assert 0 < ents.low < ents.observed < ents.high and ents.observed == pytest.approx(20 / 72)
        assert (ents.n_runs_a, ents.n_runs_b, ents.n_docs) == (3, 3, DOCS)
        # relations: identical counts -> degenerate interval at 0
        assert rels.low == rels.high == rels.observed == 0.0


def test_report_shows_the_intervals_and_the_seed_counts(tmp_path):
    rows = _rows()
    rows += [synthetic.row("fewshot", "soft", seed, 0.3, 0.1, k=5) for seed in (0, 1, 2)]
    rows += [synthetic.row("fewshot", "soft", 0, 0.5, 0.2, k=10)]  # one seed only at k=10
    summary = render_report(synthetic.write(rows, tmp_path / "r.jsonl"), tmp_path / "out", plots=False)
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf8")
    section = text.split("### Paired bootstrap")[1].split("## Few-shot")[0]
    line = next(l for l in section.splitlines() if "| soft | hard |" in l)
    assert "| 3 / 3 |" in line and "| **+27.8 [" in line and "+0.0 [+0.0, +0.0] |" in line
    assert "Bold: the interval excludes 0" in section
    assert summary["bootstrap"][0]["results"]["ents_strict"]["low"] > 0
    # few-shot cells with different seed counts say theirs
    fewshot = text.split("## Few-shot")[1].split("## Cross-source")[0]
    assert "n = seeds per figure, in brackets" in fewshot
    assert "| 30.0 ± 0.0 (n=3) | 50.0 (n=1) |" in fewshot


def test_rows_without_per_doc_counts_say_so(tmp_path):
    rows = [synthetic.row("strategies", s, seed, v, 0.2) for s, v in (("soft", 0.6), ("hard", 0.5)) for seed in (0, 1)]
    items = strategy_bootstrap(rows)
    assert len(items) == 1 and items[0]["results"] == {} and "no per-document counts" in items[0]["error"]
    render_report(synthetic.write(rows, tmp_path / "r.jsonl"), tmp_path / "out", plots=False)
    assert "– (no per-document counts" in (tmp_path / "out" / "report.md").read_text(encoding="utf8")


def test_seed_count_formatting():
    assert pct(make_stat([0.5]), n=True) == "50.0 (n=1)"
    assert pct(make_stat([0.65, 0.67]), n=True) == "66.0 ± 1.4 (n=2)"
    assert seed_note([1]) == "n = 1 seed per figure (no sd)" and seed_note([3]) == "n = 3 seeds per figure"


def test_strategy_figure_from_fewer_runs_than_seeds_says_its_n(tmp_path):
    rows = [synthetic.row("strategies", "soft", 0, 0.5, 0.4), synthetic.row("strategies", "soft", 1, 0.7, None)]
    render_report(synthetic.write(rows, tmp_path / "r.jsonl"), tmp_path / "out", plots=False)
    line = next(l for l in (tmp_path / "out" / "report.md").read_text(encoding="utf8").splitlines() if "| soft | 2 |" in l)
    assert "| 60.0 ± 14.1 |" in line and "| 40.0 (n=1) |" in line
