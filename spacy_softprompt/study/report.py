"""``python -m spacy_softprompt report RESULTS OUT_DIR``: the study's Markdown report.

Writes ``OUT_DIR/report.md`` with

* a **strategy comparison** table (entity/relation strict and lenient F1, mean ±
  sample sd over seeds, trainable parameters, wall time, peak memory) and
  ``strategies.png`` (grouped bars with sd error bars), and a **paired
  bootstrap** table: per context, the best strategy (highest mean score) minus
  each other one, entity and relation strict F1, 95% interval over documents
  with the seeds of each strategy pooled (:mod:`spacy_softprompt.bootstrap`;
  needs the per-document counts every evaluation records);
* **few-shot** tables (F1 at each k) and ``fewshot.png`` (learning curves: mean
  line, band = min..max over seeds, x = training documents on a log scale);
* **transfer** matrices (source -> target, in-domain -> cross-source drop with
  its bootstrap interval) and ``transfer.png`` (annotated heatmaps);
* **MRC vs single pass** (experiment ``mrc``): F1 of both, paired bootstrap of
  the difference, inference and training cost ratios;
* **prompt shape** tables (F1 and trainable parameters by prompt length, for
  input/deep x frozen/unfrozen) and ``prompt_shape.png`` (curves over P);
* the study's four **questions** answered from intervals (held / not held /
  inconclusive, :mod:`.conclusions`) next to the source study's claims;
* **convergence** (runs whose dev curve was still rising, :mod:`.curve`), stale
  runs (recipe no longer current, :mod:`.recipe`) and failed runs;

plus ``results.csv`` (the latest row per run) and ``summary.json`` (aggregates
and verdicts). Only rows with ``status == "ok"`` and the current recipe enter
the numbers; when a key appears several times the latest successful row is used.

All scores are on each run's primary evaluation set (its first test set, else
dev) except transfer, which uses every evaluation set of a run as a target.
The questions compare one **score** per run: the mean of entity strict F1 and
relation strict F1 (the training's score weights), or the one of them that exists.
The pieces: :mod:`.stats` (numbers from rows), :mod:`.tables` (aggregates),
:mod:`.conclusions`, :mod:`.plots`, :mod:`.labels` and :mod:`.markdown`.
"""
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from .conclusions import check_conclusions, prompt_shape_comparisons
from .markdown import (
    bootstrap_section,
    conclusions_section,
    convergence_section,
    failed_section,
    fewshot_section,
    mrc_section,
    overview,
    prompt_shape_section,
    stale_section,
    strategy_section,
    transfer_section,
)
from .plots import plot_answers, plot_fewshot, plot_prompt_shape, plot_strategies, plot_transfer, pyplot
from .results import F1_KEYS, latest_rows, read_results, write_csv
from .stats import Stat
from .recipe import split_stale
from .tables import (
    fewshot_table,
    mrc_table,
    prompt_shape_table,
    strategy_bootstrap,
    strategy_table,
    transfer_drop_intervals,
    transfer_table,
)

PathLike = Union[str, Path]


def render_report(
    results: PathLike, out_dir: PathLike, *, plots: bool = True, current_recipes: Optional[Mapping[str, str]] = None
) -> Dict[str, Any]:
    """Write ``report.md``, the PNGs, ``results.csv`` and ``summary.json``;
    returns the summary (aggregates, verdicts, written files). Rows with a stale
    recipe (:func:`~.recipe.split_stale`; ``current_recipes``: key -> the recipe
    planned now) are listed, never used."""
    results, out_dir = Path(results), Path(out_dir)
    fresh, stale = split_stale(read_results(results), current_recipes)
    rows = latest_rows(fresh)  # per key: the last successful row with the current recipe, else its last failure
    stale = [r for r in latest_rows(stale) if r.get("key") not in {row.get("key") for row in rows}]
    out_dir.mkdir(parents=True, exist_ok=True)
    strategies = strategy_table(rows)
    fewshot = fewshot_table(rows)
    transfer = transfer_table(rows)
    shape = prompt_shape_table(rows)
    conclusions = check_conclusions(rows, planned=list(current_recipes) if current_recipes is not None else None)
    images: Dict[str, Optional[str]] = {"strategies": None, "fewshot": None, "transfer": None, "prompt_shape": None, "answers": None}
    plot_note = None
    if plots:
        try:
            pyplot()
        except ImportError:
            plot_note = "matplotlib is not installed (pip install spacy-softprompt[plots]): no plots."
        else:
            for name, fn, data in (
                ("strategies", plot_strategies, strategies),
                ("fewshot", plot_fewshot, fewshot),
                ("transfer", plot_transfer, transfer),
                ("prompt_shape", plot_prompt_shape, shape),
                ("answers", plot_answers, conclusions),
            ):
                written = fn(data, out_dir / f"{name}.png")
                images[name] = written.name if written else None
    lines = overview(rows, str(results))
    if plot_note:
        lines += [f"*{plot_note}*", ""]
    lines += strategy_section(strategies, images["strategies"])
    bootstrap = strategy_bootstrap(rows)
    if strategies:
        lines += bootstrap_section(bootstrap)
    lines += fewshot_section(fewshot, images["fewshot"])
    transfer_intervals = transfer_drop_intervals(rows)
    lines += transfer_section(transfer, images["transfer"], transfer_intervals)
    mrc = mrc_table(rows)
    have = {r.get("key") for r in rows if r.get("status") == "ok"}
    pending = sorted(k for k in (current_recipes or {}) if k.startswith("mrc/mrc-") and k not in have)
    if mrc or pending or any(r.get("experiment") == "mrc" for r in rows):
        lines += mrc_section(mrc, pending)
    shape_comparisons = prompt_shape_comparisons(rows)
    lines += prompt_shape_section(shape, images["prompt_shape"], shape_comparisons)
    lines += conclusions_section(conclusions, images["answers"])
    lines += convergence_section(rows)
    lines += stale_section(stale, current_recipes)
    lines += failed_section(rows)
    report_path = out_dir / "report.md"
    report_path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf8")
    write_csv(rows, out_dir / "results.csv")
    summary = {
        "results": str(results),
        "runs": len(rows),
        "ok": sum(1 for r in rows if r.get("status") == "ok"),
        "failed": sum(1 for r in rows if r.get("status") != "ok"),
        "report": str(report_path),
        "images": {k: str(out_dir / v) for k, v in images.items() if v},
        "stale": [r.get("key") for r in stale],
        "not_converged": [
            r.get("key")
            for r in rows
            if r.get("status") == "ok" and not r.get("reused_from") and (r.get("convergence") or {}).get("converged") is not True
        ],
        "conclusions": [dict(asdict(c), verdict_text=c.verdict_text) for c in conclusions],
        "prompt_shape_comparisons": [dict(asdict(c), text=c.text()) for c in shape_comparisons],
        "transfer_drops": [
            {"group": list(key), "target": target, "drop": value.to_dict() if hasattr(value, "to_dict") else value}
            for key, by_target in transfer_intervals.items()
            for target, value in by_target.items()
        ],
        "mrc": [
            {
                "context": list(e["context"]),
                "strategy": e["strategy"],
                "results": {k: r.to_dict() for k, r in e["results"].items()},
                "error": e["error"],
                "inference_ratio": e.get("inference_ratio"),
                "training_ratio": e.get("training_ratio"),
                **{f"{mode}_{m}": _stat_dict(e[f"{mode}_stats"][m]) for mode in ("single", "mrc") for m in F1_KEYS},
            }
            for e in mrc
        ],
        "bootstrap": [
            {
                **{k: item[k] for k in ("best", "other", "n_best", "n_other", "error")},
                "context": list(item["context"]),
                "results": {k: r.to_dict() for k, r in item["results"].items()},
            }
            for item in bootstrap
        ],
        "strategies": [
            {
                "context": list(e["context"]),
                "strategy": e["strategy"],
                "n": e["n"],
                **{m: _stat_dict(e[m]) for m in F1_KEYS + ("score", "trainable_params", "wall_seconds", "peak_mb")},
            }
            for e in strategies
        ],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf8")
    return summary


def _stat_dict(stat: Optional[Stat]) -> Optional[Dict[str, Any]]:
    if stat is None:
        return None
    return {"mean": stat.mean, "sd": stat.sd, "n": stat.n, "min": stat.min, "max": stat.max}
