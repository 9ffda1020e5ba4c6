"""The study report from synthetic results: tables hold the right means, the PNGs
are real PNGs, and the four conclusions are checked both ways."""
import json
import struct
import warnings

import pytest

import synthetic
from spacy_softprompt.study.conclusions import check_conclusions
from spacy_softprompt.study.intervals import HELD, INCONCLUSIVE, NO_DATA, NOT_HELD
from spacy_softprompt.study.labels import pct
from spacy_softprompt.study.report import render_report
from spacy_softprompt.study.stats import make_stat
from spacy_softprompt.study.tables import strategy_table
from spacy_softprompt.study.results import latest_rows, read_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND" or b"IEND" in data[-12:]
    return width, height


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    results = synthetic.write(synthetic.paper_like_rows(), tmp / "results.jsonl")
    summary = render_report(results, tmp / "out")
    return summary, tmp / "out"


def test_report_tables_hold_the_means(rendered):
    summary, out = rendered
    text = (out / "report.md").read_text(encoding="utf8")
    # strategy comparison: soft on the small backbone, seeds 0.65/0.67 -> 66.0 ± 1.4; lenient +10
    line = next(l for l in text.splitlines() if "· small ·" in l and "| soft |" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:3] == ["soft", "2"]
    assert cells[5:9] == ["66.0 ± 1.4", "76.0 ± 1.4", "46.0 ± 1.4", "51.0 ± 1.4"]
    # frozen row: 2% of the parameters train
    frozen = next(l for l in text.splitlines() if "· small ·" in l and "| soft-frozen |" in l)
    assert "440,000" in frozen and "2.00%" in frozen
    # few-shot: soft-frozen at k=5 is 20.0 ± 2.8 (0.18 / 0.22), and 45.0 at all
    fewshot = text.split("## Few-shot")[1].split("## Cross-source")[0]
    row = next(l for l in fewshot.splitlines() if "| soft-frozen |" in l)
    assert "| 20.0 ± 2.8 | 30.0 ± 2.8 | 40.0 ± 2.8 | 45.0 ± 2.8 |" in row
    # transfer matrix and drop
    transfer = text.split("## Cross-source")[1].split("## Prompt length")[0]
    assert "| drugbank | medline |" in transfer
    soft = next(l for l in transfer.splitlines() if "| soft | drugbank |" in l)
    assert "80.0 ± 0.0" in soft and "50.0 ± 0.0" in soft and "+30.0" in soft
    # prompt shape: deep unfrozen P=100 -> 0.3 + 0.1 + 0.1 = 50.0
    shape = text.split("## Prompt length")[1].split("## Conclusions")[0]
    assert "| P=1 | P=20 | P=100 |" in shape
    deep = next(l for l in shape.splitlines() if "| deep | no |" in l)
    assert deep.rstrip().endswith("| 50.0 |")
    # failed run listed, not averaged
    assert "## Failed runs" in text and "Killed" in text
    assert summary["runs"] == 49 and summary["failed"] == 1
    entry = next(e for e in summary["strategies"] if e["strategy"] == "soft" and e["context"][1] == "small")
    assert entry["n"] == 2 and entry["ents_strict_f"]["mean"] == pytest.approx(0.66)


def test_report_writes_valid_pngs_csv_and_summary(rendered):
    summary, out = rendered
    text = (out / "report.md").read_text(encoding="utf8")
    for name in ("strategies", "fewshot", "transfer", "prompt_shape"):
        path = out / f"{name}.png"
        width, height = _png_size(path)
        assert width > 200 and height > 100
        assert f"]({name}.png)" in text
        assert summary["images"][name] == str(path)
    csv_lines = (out / "results.csv").read_text(encoding="utf8").splitlines()
    assert len(csv_lines) == 1 + 49 and csv_lines[0].startswith("key,experiment,status")
    assert json.loads((out / "summary.json").read_text())["conclusions"][0]["verdict"] == HELD


def test_conclusions_hold_on_paper_like_numbers(rendered):
    summary, out = rendered
    assert [c["verdict"] for c in summary["conclusions"]] == [HELD] * 4
    text = (out / "report.md").read_text(encoding="utf8")
    assert text.count(": held.**") == 4
    assert "| 3 | Frozen models learn better from few examples | **held** | yes: frozen LLMs showed better few-shot" in text
    # every comparison carries its interval: soft - hard on the small backbone is 4 points, documents agreeing
    soft_hard = next(c for c in summary["conclusions"][0]["comparisons"] if "small" in c["label"] and c["label"].endswith("soft − hard"))
    assert soft_hard["observed"] == pytest.approx(0.04, abs=0.006) and 0 < soft_hard["low"] < soft_hard["high"]
    assert soft_hard["seeds"] == [2, 2] or soft_hard["seeds"] == (2, 2)


def _reversed_rows():
    """Numbers against every claim, one kind of "not held" each: opposite intervals,
    and equal within a point (large backbone, question 2)."""
    rows = []
    base = {
        "small": {"finetune": 0.70, "hard": 0.60, "soft": 0.65, "soft-frozen": 0.70},  # soft < finetune; frozen ahead
        "large": {"finetune": 0.70, "hard": 0.70, "soft": 0.80, "soft-frozen": 0.80},  # frozen equal
    }
    for backbone, scores in base.items():
        for strategy, value in scores.items():
            for seed in (0, 1):
                rows.append(synthetic.row("strategies", strategy, seed, value, value, backbone=backbone, docs=synthetic.DOCS))
    for strategy, values in {"soft": {5: 0.3, 10: 0.4}, "soft-frozen": {5: 0.2, 10: 0.3}}.items():
        for k, value in values.items():
            rows.append(synthetic.row("fewshot", strategy, 0, value, value, k=k, docs=synthetic.DOCS))
    for strategy, (inside, cross) in {"soft": (0.8, 0.7), "soft-frozen": (0.8, 0.5)}.items():
        ev = {"drugbank": {"ents_strict_f": inside, "rels_strict_f": inside}, "medline": {"ents_strict_f": cross, "rels_strict_f": cross}}
        rows.append(
            synthetic.row("transfer", strategy, 0, inside, inside, train="drugbank", test="drugbank", evaluations=ev, docs=synthetic.DOCS)
        )
    return rows


def test_conclusions_do_not_hold_on_contrary_numbers():
    verdicts = check_conclusions(_reversed_rows())
    assert [c.verdict for c in verdicts] == [NOT_HELD] * 4
    by_label = {c["label"].split(": ")[-1] + " " + c["label"].split(" · ")[1]: c for c in verdicts[1].comparisons}
    assert by_label["soft − soft-frozen small"]["high"] < 0  # frozen ahead: the opposite
    equal = by_label["soft − soft-frozen large"]
    assert equal["observed"] == 0 and -0.01 <= equal["low"] <= equal["high"] <= 0.01 and equal["verdict"] == NOT_HELD
    drop = verdicts[3].comparisons[0]
    assert "drop(soft) − drop(soft-frozen)" in drop["label"] and drop["observed"] == pytest.approx(-0.2, abs=0.006)


def test_conclusions_are_inconclusive_when_documents_or_seeds_disagree():
    rows = []
    for seed, (soft, hard) in enumerate(((0.70, 0.60), (0.55, 0.65))):  # seeds disagree on the sign
        rows.append(synthetic.row("strategies", "soft", seed, soft, soft, docs=synthetic.DOCS))
        rows.append(synthetic.row("strategies", "hard", seed, hard, hard, docs=synthetic.DOCS))
    (comparison,) = check_conclusions(rows)[0].comparisons
    assert comparison["verdict"] == INCONCLUSIVE and comparison["seed_noise"] > abs(comparison["seed_gap"])
    # no per-document counts: no interval, inconclusive
    plain = [synthetic.row("strategies", s, 0, v, v) for s, v in (("soft", 0.7), ("hard", 0.5))]
    verdict = check_conclusions(plain)[0]
    assert verdict.verdict == INCONCLUSIVE and "no interval (no per-document counts)" in verdict.evidence[0]


def test_conclusions_without_the_runs_they_need():
    rows = [synthetic.row("strategies", "soft", s, 0.5, 0.5, docs=synthetic.DOCS) for s in (0, 1)]
    rows.append(synthetic.row("strategies", "hard", 0, 0.4, 0.4, docs=synthetic.DOCS))
    verdicts = check_conclusions(rows)
    assert [c.verdict for c in verdicts] == [HELD, NO_DATA, NO_DATA, NO_DATA]
    assert verdicts[2].evidence == ["needs few-shot runs of soft-frozen and an unfrozen strategy at the same small k"]
    # failed runs never count
    failed = [synthetic.row("strategies", "finetune", 0, 0.9, 0.9, status="failed", docs=synthetic.DOCS)]
    assert check_conclusions(rows + failed)[0].verdict == HELD


def test_transfer_uses_dev_as_in_domain_when_no_source_test():
    rows = []
    for strategy, (inside, cross) in {"soft": (0.8, 0.4), "soft-frozen": (0.7, 0.6)}.items():
        ev = {"drugbank-dev": {"ents_strict_f": inside}, "medline": {"ents_strict_f": cross}}
        rows.append(
            synthetic.row("transfer", strategy, 0, cross, None, train="drugbank", test="medline", evaluations=ev, docs=synthetic.DOCS)
        )
    verdict = check_conclusions(rows)[3]
    (comparison,) = verdict.comparisons
    assert verdict.verdict == HELD and "drugbank → medline" in comparison["label"]
    assert comparison["observed"] == pytest.approx(0.30, abs=0.006)  # drops 40 vs 10 points, entities only


def test_stats_and_formatting():
    stat = make_stat([0.65, 0.67, None])
    assert stat.n == 2 and pct(stat) == "66.0 ± 1.4"
    assert pct(make_stat([0.5])) == "50.0" and pct(None) == "–" and make_stat([None]) is None


def test_latest_row_per_key_and_corrupt_lines(tmp_path):
    ok = synthetic.row("strategies", "soft", 0, 0.5, 0.5)
    failed = dict(ok, status="failed", ents_strict_f=None)
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(failed) + "\n" + '{"key": "trunc' + "\n" + json.dumps(ok) + "\n", encoding="utf8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_results(path)
    assert len(rows) == 2 and any("not a JSON line" in str(w.message) for w in caught)
    latest = latest_rows(rows)
    assert len(latest) == 1 and latest[0]["status"] == "ok"
    assert strategy_table(latest)[0]["ents_strict_f"].mean == 0.5


def test_report_command(tmp_path):
    from typer.testing import CliRunner

    from spacy_softprompt.study.cli import study_app

    results = synthetic.write([synthetic.row("strategies", "soft", 0, 0.5, 0.4)], tmp_path / "r.jsonl")
    result = CliRunner().invoke(study_app, ["report", str(results), str(tmp_path / "out"), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "(1) Soft prompts beat hard prompts and fine-tuning when the backbone is trained: not enough data" in result.output
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf8")
    assert "No successful `fewshot` runs." in text and not list((tmp_path / "out").glob("*.png"))
    missing = CliRunner().invoke(study_app, ["report", str(tmp_path / "nope.jsonl"), str(tmp_path / "out")])
    assert missing.exit_code == 2


def test_runs_that_did_not_converge_are_flagged(tmp_path):
    still_rising = {"converged": False, "best_step": 600, "late_gain": 0.02, "last_step": 600}
    flat = {"converged": True, "best_step": 400, "late_gain": 0.0, "last_step": 600}
    rows = [
        synthetic.row("strategies", "soft", 0, 0.6, 0.5, convergence=flat),
        synthetic.row("strategies", "soft-frozen", 0, 0.4, 0.2, convergence=still_rising),
        synthetic.row("fewshot", "soft-frozen", 0, 0.3, 0.1, k=10, convergence=still_rising),
        synthetic.row("fewshot", "soft", 0, 0.3, 0.1, k=10, convergence=flat),
        synthetic.row("prompt-shape", "soft-frozen", 0, 0.45, 0.3, prompt_length=5, convergence=still_rising),
        synthetic.row("prompt-shape", "soft-frozen", 0, 0.55, 0.3, prompt_length=20, convergence=flat),
    ]
    summary = render_report(synthetic.write(rows, tmp_path / "r.jsonl"), tmp_path / "out", plots=False)
    assert sorted(summary["not_converged"]) == sorted(r["key"] for r in rows if r["convergence"] is still_rising)
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf8")
    assert "| soft-frozen † | 1 |" in text and "| soft | 1 |" in text
    assert "| single · small · maccrobat → maccrobat-test | soft-frozen | 30.0 † |" in text
    assert "| deep | yes | 45.0 † | 55.0 |" in text  # prompt shape: the P=5 cell only
    assert "3 of 6 trained runs converged" in text and "| 600 | 600 | +2.0 | its schedule |" in text


def test_verdicts_before_the_grid_is_done_are_provisional(tmp_path):
    from spacy_softprompt.study.report import render_report

    rows = [synthetic.row("strategies", "soft", s, 0.6, 0.6, docs=synthetic.DOCS) for s in (0, 1)]
    rows += [synthetic.row("strategies", "hard", s, 0.4, 0.4, docs=synthetic.DOCS) for s in (0, 1)]
    keys = [r["key"] for r in rows]
    planned = keys + ["strategies/single-hard-s2", "fewshot/single-soft-k10-s0"]
    verdicts = check_conclusions(rows, planned=planned)
    assert verdicts[0].verdict == HELD and verdicts[0].provisional == "4 of 5 planned strategies runs in"
    assert verdicts[0].verdict_text == "held (provisional: 4 of 5 planned strategies runs in)"
    assert verdicts[2].verdict == NO_DATA and verdicts[2].provisional is None  # nothing to call provisional
    assert check_conclusions(rows, planned=keys)[0].provisional is None  # every planned run is in
    assert check_conclusions(rows)[0].provisional is None  # no grid given: nothing is known to be missing
    # a planned run that another experiment already trained (same run id) is in: the grid copies it
    trained_elsewhere = dict(synthetic.row("strategies", "hard", 2, 0.4, 0.4, docs=synthetic.DOCS))
    run_id = trained_elsewhere["key"].split("/", 1)[1]
    trained_elsewhere.update(key=f"fewshot/{run_id}", experiment="fewshot")
    both = check_conclusions(rows + [trained_elsewhere], planned=keys + [f"strategies/{run_id}"])
    assert both[0].verdict == HELD and both[0].provisional is None
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf8")
    current = {r["key"]: r.get("recipe") for r in rows}
    current["strategies/single-hard-s2"] = rows[0].get("recipe")
    summary = render_report(results, tmp_path / "out", plots=False, current_recipes=current)
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf8")
    assert "| **held** (provisional: 4 of 5 planned strategies runs in) |" in text
    assert summary["conclusions"][0]["verdict_text"].startswith("held (provisional")


def test_transfer_verdict_comes_with_the_scores_on_the_target_itself(tmp_path):
    """A smaller drop from a lower start: question 4 is held on the drops, and the context line shows
    the frozen runs still behind on the target itself (an interval below 0), in the summary and the report."""
    rows = []
    for strategy, (inside, cross) in {"soft": (0.80, 0.60), "soft-frozen": (0.65, 0.55)}.items():
        for seed, jitter in ((0, -0.005), (1, 0.005)):
            ev = {"drugbank": {"ents_strict_f": inside + jitter, "rels_strict_f": inside + jitter},
                  "medline": {"ents_strict_f": cross + jitter, "rels_strict_f": cross + jitter}}
            rows.append(synthetic.row("transfer", strategy, seed, inside, inside, train="drugbank", test="drugbank",
                                      evaluations=ev, docs=synthetic.DOCS))
    q4 = check_conclusions(rows)[3]
    assert q4.verdict == HELD and q4.comparisons[0]["observed"] == pytest.approx(0.10, abs=0.006)
    (line,) = q4.context
    head, numbers = line.split(" itself: soft-frozen − soft: ")
    assert head == "single · small · drugbank → medline, on medline"
    observed = float(numbers.split(" [")[0])
    low, high = (float(x) for x in numbers.split("[")[1].split("]")[0].split(", "))
    assert -6 < observed < -4 and low <= observed <= high < 0  # points; 5 apart, up to the counts' rounding
    assert "->" not in line  # context carries no verdict
    summary = render_report(synthetic.write(rows, tmp_path / "results.jsonl"), tmp_path / "out")
    assert summary["conclusions"][3]["context"] == [line]
    assert f"   - context, not part of the verdict: {line}" in (tmp_path / "out" / "report.md").read_text(encoding="utf8")


def test_report_names_the_grids_mrc_run_while_it_is_not_in(tmp_path):
    """The grid's MRC recipe changed (a longer schedule): the old MRC row is stale and left out, and the
    MRC section says which planned run is still to come instead of showing nothing."""
    single = synthetic.row("mrc", "soft", 0, 0.6, 0.6, docs=synthetic.DOCS, recipe="r-single")
    old_mrc = synthetic.row("mrc", "soft", 0, 0.4, 0.2, mode="mrc", docs=synthetic.DOCS, recipe="r-1200-steps")
    results = synthetic.write([single, old_mrc], tmp_path / "results.jsonl")
    current = {single["key"]: "r-single", old_mrc["key"]: "r-2400-steps"}
    render_report(results, tmp_path / "out", plots=False, current_recipes=current)
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf8")
    mrc = text.split("## MRC with per-label prompts vs single pass")[1].split("\n## ")[0]
    assert f"Not in yet with the grid's recipe: `{old_mrc['key']}`" in mrc
    assert "| maccrobat" not in mrc  # no table from the stale row
    stale = text.split("## Stale runs (left out)")[1]
    assert old_mrc["key"] in stale and "r-1200-steps" in stale
    # once it is in, the table is back and nothing is pending
    new_mrc = dict(old_mrc, recipe="r-2400-steps")
    render_report(synthetic.write([single, new_mrc], tmp_path / "results2.jsonl"), tmp_path / "out2", plots=False,
                  current_recipes=current)
    text = (tmp_path / "out2" / "report.md").read_text(encoding="utf8")
    assert "Not in yet" not in text and "MRC − single" in text


def test_prompt_shape_comparisons_give_intervals_in_the_report(tmp_path):
    """Deep clearly ahead of input at each length, and one length clearly best per depth: the report lists
    each comparison with its interval and the reading of "A − B > 0"."""
    from spacy_softprompt.study.conclusions import prompt_shape_comparisons

    scores = {("deep", 5): 0.60, ("deep", 20): 0.50, ("input", 5): 0.30, ("input", 20): 0.40}
    rows = [
        synthetic.row("prompt-shape", "soft-frozen", seed, value + jitter, value + jitter, prompt_depth=depth,
                      prompt_length=length, docs=synthetic.DOCS)
        for (depth, length), value in scores.items()
        for seed, jitter in ((0, -0.005), (1, 0.005))
    ]
    found = {c.label.split(", frozen, ")[1]: c for c in prompt_shape_comparisons(rows)}
    assert set(found) == {"P=5: deep − input", "P=20: deep − input", "deep: P=5 − P=20", "input: P=20 − P=5"}
    assert found["P=5: deep − input"].observed == pytest.approx(0.30, abs=0.01)
    assert found["deep: P=5 − P=20"].observed == pytest.approx(0.10, abs=0.01)
    assert all(c.verdict == HELD and c.low > 0 for c in found.values())
    render_report(synthetic.write(rows, tmp_path / "results.jsonl"), tmp_path / "out", plots=False)
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf8")
    assert f"- {found['deep: P=5 − P=20'].text()}" in text and "-> held" in text


def test_mrc_section_compares_mrcs_non_overlapping_view_with_an_interval(tmp_path):
    """MRC's nested spans count as false positives against flat gold; when its runs recorded
    the non-overlapping view (``flat_entities`` with per-document counts), the MRC section
    compares that view with the single pass too, paired by document."""
    single = synthetic.row("mrc", "soft", 0, 0.6, 0.6, docs=synthetic.DOCS)
    mrc = synthetic.row("mrc", "soft", 0, 0.4, 0.2, mode="mrc", docs=synthetic.DOCS)
    results = synthetic.write([single, mrc], tmp_path / "plain.jsonl")
    render_report(results, tmp_path / "plain", plots=False)
    assert "non-overlapping view" not in (tmp_path / "plain" / "report.md").read_text(encoding="utf8")

    evaluation = mrc["evaluations"][mrc["primary_eval"]]
    evaluation["flat_entities"] = {"ents_strict_f": 0.5, "per_doc": synthetic.per_doc_for(0.5, None)}
    render_report(synthetic.write([single, mrc], tmp_path / "flat.jsonl"), tmp_path / "flat", plots=False)
    text = (tmp_path / "flat" / "report.md").read_text(encoding="utf8")
    section = text.split("## MRC with per-label prompts vs single pass")[1].split("\n## ")[0]
    (line,) = [x for x in section.splitlines() if "entity strict F1 of the non-overlapping view" in x]
    assert "single / MRC 60.0 / 50.0" in line
    observed = float(line.split("MRC − single ")[1].strip("*").split(" [")[0])
    low, high = (float(x) for x in line.split("[")[1].split("]")[0].split(", "))
    assert -11 < observed < -9 and low <= observed <= high < 0 and "**" in line
