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
* **transfer** matrices (source -> target, in-domain -> cross-source drop) and
  ``transfer.png`` (annotated heatmaps);
* **prompt shape** tables (F1 and trainable parameters by prompt length, for
  input/deep x frozen/unfrozen) and ``prompt_shape.png`` (curves over P);
* failed runs; and **conclusions**: the study's four claims checked
  mechanically on the rows given (``held`` / ``did not hold`` / ``not enough
  data``, with the numbers used).

plus ``results.csv`` (the latest row per run) and ``summary.json`` (aggregates
and verdicts). Only rows with ``status == "ok"`` enter the numbers; when a key
appears several times the latest successful row is used.

All scores are on each run's primary evaluation set (its first test set, else
dev) except transfer, which uses every evaluation set of a run as a target.
The conclusions compare one **score** per run: the mean of entity strict F1
and relation strict F1 (the training's score weights), or the one of them that
exists; "beats" means a strictly higher mean over seeds.
"""
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, BootstrapResult, paired_bootstrap
from ..per_doc import PER_DOC_KEY, PerDoc, read_per_doc, stack
from .results import F1_KEYS, latest_rows, metric, read_results, write_csv

PathLike = Union[str, Path]

HELD, NOT_HELD, NO_DATA = "held", "did not hold", "not enough data"
STRATEGY_ORDER = ("finetune", "hard", "soft", "soft-frozen")
METRIC_LABELS = {
    "ents_strict_f": "ents strict F1",
    "ents_lenient_f": "ents lenient F1",
    "rels_strict_f": "rels strict F1",
    "rels_lenient_f": "rels lenient F1",
    "score": "score",
}
CURVE_METRICS = ("ents_strict_f", "rels_strict_f")
SMALL_K = 10  # few-shot "small k": every k <= 10 (else the smallest k run)


# ------------------------------------------------------------------ numbers
@dataclass
class Stat:
    values: List[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> Optional[float]:
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)


def make_stat(values: Iterable[Optional[float]]) -> Optional[Stat]:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return Stat(values) if values else None


def pct(stat: Optional[Stat], *, sd: bool = True, n: bool = False) -> str:
    """``61.2 ± 1.3`` (percent; sd only with two or more seeds; ``(n=3)`` appended
    with ``n``); ``–`` for no data."""
    if stat is None:
        return "–"
    text = f"{100 * stat.mean:.1f}"
    if sd and stat.sd is not None:
        text += f" ± {100 * stat.sd:.1f}"
    return f"{text} (n={stat.n})" if n else text


def seed_counts(stats: Iterable[Optional[Stat]]) -> List[int]:
    """The distinct numbers of seeds behind the figures of one table."""
    return sorted({s.n for s in stats if s is not None})


def seed_note(counts: Sequence[int]) -> str:
    """How a table says its seed count: once when every figure has the same one,
    else per figure (``(n=...)``, see :func:`pct`)."""
    if len(counts) == 1:
        n = counts[0]
        return f"n = {n} seed{'s' if n > 1 else ''} per figure" + (" (no sd)" if n == 1 else "")
    return "n = seeds per figure, in brackets"


def run_score(row: Dict[str, Any], eval_name: Optional[str] = None) -> Optional[float]:
    """Mean of entity and relation strict F1 (whichever exist) on one evaluation set."""
    values = [metric(row, key, eval_name) for key in ("ents_strict_f", "rels_strict_f")]
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def row_value(row: Dict[str, Any], key: str, eval_name: Optional[str] = None) -> Optional[float]:
    return run_score(row, eval_name) if key == "score" else metric(row, key, eval_name)


def k_value(k: Any) -> Optional[int]:
    """Row ``k`` -> int, or None for all documents."""
    if k is None or (isinstance(k, str) and k.strip().lower() in ("all", "", "none")):
        return None
    return int(k)


def k_label(k: Optional[int]) -> str:
    return "all" if k is None else str(k)


def _k_sort(k: Optional[int]) -> Tuple[int, int]:
    return (1, 0) if k is None else (0, k)


def strategy_sort(strategy: str) -> Tuple[int, str]:
    return (STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER), strategy)


def short_backbone(name: Any) -> str:
    text = str(name).replace("package:", "")
    parts = [p for p in text.replace("\\", "/").split("/") if p]
    if len(parts) > 2 and not text.startswith(("UFNLP", "http")):
        parts = parts[-2:]
    return "/".join(parts) or text


def _group(rows: Iterable[Dict[str, Any]], key: Callable[[Dict[str, Any]], Tuple]) -> Dict[Tuple, List[Dict[str, Any]]]:
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def ok_rows(rows: Iterable[Dict[str, Any]], experiment: Optional[str] = None) -> List[Dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and (experiment is None or r.get("experiment") == experiment)]


def context_of(row: Dict[str, Any]) -> Tuple[str, str, str, str]:
    """(mode, backbone, train corpus, primary evaluation set)."""
    return (str(row.get("mode")), str(row.get("backbone")), str(row.get("train_corpus")), str(row.get("primary_eval")))


def _context_label(ctx: Tuple[str, str, str, str]) -> str:
    mode, backbone, train, test = ctx
    return f"{mode} · {short_backbone(backbone)} · {train} → {test}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[Sequence[str]] = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _int(value: Optional[float]) -> str:
    return "–" if value is None else f"{int(round(value)):,}"


# ------------------------------------------------------------------ aggregates
def strategy_table(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per (context, strategy): stats of the four F1s and costs."""
    out = []
    groups = _group(ok_rows(rows, "strategies"), lambda r: context_of(r) + (str(r.get("strategy")),))
    for key in sorted(groups, key=lambda k: (k[:4], strategy_sort(k[4]))):
        members = groups[key]
        entry = {
            "context": key[:4],
            "strategy": key[4],
            "n": len(members),
            "seeds": sorted({r.get("seed") for r in members}, key=str),
        }
        for name in F1_KEYS + ("score",):
            entry[name] = make_stat(row_value(r, name) for r in members)
        for name in ("trainable_params", "total_params", "wall_seconds", "peak_mb"):
            entry[name] = make_stat(r.get(name) for r in members)
        out.append(entry)
    return out


BOOTSTRAP_KEYS = ("ents_strict", "rels_strict")


def per_doc_of(row: Dict[str, Any], eval_name: Optional[str] = None) -> Optional[PerDoc]:
    """The per-document counts of a run on one evaluation set (default: its primary
    one); None for rows recorded without them."""
    scores = (row.get("evaluations") or {}).get(eval_name or row.get("primary_eval")) or {}
    if not isinstance(scores.get(PER_DOC_KEY), dict):
        return None
    try:
        return read_per_doc(scores)
    except ValueError:
        return None


def strategy_bootstrap(
    rows: List[Dict[str, Any]], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> List[Dict[str, Any]]:
    """Per context of the strategy comparison: the best strategy (highest mean
    score over seeds) against each other one -- paired bootstrap of best - other
    for entity and relation strict F1, documents resampled, seeds of each strategy
    pooled per document. ``error`` says why an entry has no interval."""
    entries = [e for e in strategy_table(rows) if e["score"] is not None]
    groups = _group(ok_rows(rows, "strategies"), lambda r: context_of(r) + (str(r.get("strategy")),))
    out = []
    for ctx in dict.fromkeys(e["context"] for e in entries):
        candidates = [e for e in entries if e["context"] == ctx]
        if len(candidates) < 2:
            continue
        best = max(candidates, key=lambda e: e["score"].mean)
        best_docs = [per_doc_of(r) for r in groups[ctx + (best["strategy"],)]]
        for other in candidates:
            if other is best:
                continue
            item: Dict[str, Any] = {
                "context": ctx,
                "best": best["strategy"],
                "other": other["strategy"],
                "n_best": best["n"],
                "n_other": other["n"],
                "results": {},
                "error": None,
            }
            other_docs = [per_doc_of(r) for r in groups[ctx + (other["strategy"],)]]
            if any(d is None for d in best_docs + other_docs):
                item["error"] = "no per-document counts (runs recorded before they were saved)"
            else:
                try:
                    ids = best_docs[0].ids
                    for key in BOOTSTRAP_KEYS:
                        item["results"][key] = paired_bootstrap(
                            stack(best_docs, key, ids), stack(other_docs, key, ids), n_resamples=n_resamples, seed=seed
                        )
                except ValueError as error:
                    item["error"] = str(error)
            out.append(item)
    return out


def _curve_table(
    rows: Iterable[Dict[str, Any]],
    series: Callable[[Dict[str, Any]], Any],
    x: Callable[[Dict[str, Any]], Any],
    extra: Callable[[List[Dict[str, Any]]], Dict[str, Any]],
) -> Dict[Tuple, Dict[Any, Dict[Any, Dict[str, Any]]]]:
    """context -> series -> x -> cell: the runs grouped by ``series(row)`` and
    ``x(row)`` within their context; a cell holds a Stat per metric (F1_KEYS
    and "score") and what ``extra(runs of the cell)`` adds."""
    grouped: Dict[Tuple, Dict[Any, Dict[Any, List[Dict[str, Any]]]]] = {}
    for row in rows:
        grouped.setdefault(context_of(row), {}).setdefault(series(row), {}).setdefault(x(row), []).append(row)
    out: Dict[Tuple, Dict[Any, Dict[Any, Dict[str, Any]]]] = {}
    for ctx, by_series in grouped.items():
        for name, by_x in by_series.items():
            for value, members in by_x.items():
                cell = {m: make_stat(row_value(r, m) for r in members) for m in F1_KEYS + ("score",)}
                cell.update(extra(members))
                out.setdefault(ctx, {}).setdefault(name, {})[value] = cell
    return out


def fewshot_table(rows: List[Dict[str, Any]]) -> Dict[Tuple, Dict[str, Dict[Optional[int], Dict[str, Any]]]]:
    """context -> strategy -> k -> {metric: Stat, "n_docs": Stat, "frozen": bool}."""
    return _curve_table(
        ok_rows(rows, "fewshot"),
        lambda r: str(r.get("strategy")),
        lambda r: k_value(r.get("k")),
        lambda members: {
            "n_docs": make_stat(r.get("n_train_docs") for r in members),
            "frozen": any(bool(r.get("frozen")) for r in members),
        },
    )


def in_domain_name(row: Dict[str, Any]) -> Optional[str]:
    """The evaluation set from the training source: a test set named like the
    training corpus, else the dev set when it was scored."""
    evaluations = row.get("evaluations") or {}
    if row.get("train_corpus") in evaluations:
        return row["train_corpus"]
    if row.get("dev_corpus") in evaluations:
        return row["dev_corpus"]
    return None


def cross_names(row: Dict[str, Any]) -> List[str]:
    inside = {in_domain_name(row), row.get("dev_corpus")}
    return [name for name in (row.get("evaluations") or {}) if name not in inside]


def transfer_table(rows: List[Dict[str, Any]]) -> Dict[Tuple, Dict[str, Any]]:
    """(mode, backbone, strategy, source) -> {"targets": {target: {metric: Stat}},
    "in_domain": name, "drop": {metric: Stat}} where drop = in-domain minus the
    mean over cross-source targets, per run."""
    out: Dict[Tuple, Dict[str, Any]] = {}
    groups = _group(
        ok_rows(rows, "transfer"),
        lambda r: (str(r.get("mode")), str(r.get("backbone")), str(r.get("strategy")), str(r.get("train_corpus"))),
    )
    for key, members in groups.items():
        targets: Dict[str, Dict[str, Optional[Stat]]] = {}
        names = sorted({n for r in members for n in (r.get("evaluations") or {})})
        for name in names:
            targets[name] = {m: make_stat(row_value(r, m, name) for r in members) for m in F1_KEYS + ("score",)}
        drops: Dict[str, Optional[Stat]] = {}
        for m in F1_KEYS + ("score",):
            values = []
            for r in members:
                inside, cross = in_domain_name(r), cross_names(r)
                a = row_value(r, m, inside) if inside else None
                b = [row_value(r, m, c) for c in cross]
                b = [v for v in b if v is not None]
                if a is not None and b:
                    values.append(a - statistics.fmean(b))
            drops[m] = make_stat(values)
        out[key] = {
            "targets": targets,
            "in_domain": next((in_domain_name(r) for r in members if in_domain_name(r)), None),
            "cross": sorted({c for r in members for c in cross_names(r)}),
            "drop": drops,
            "frozen": any(bool(r.get("frozen")) for r in members),
            "n": len(members),
        }
    return out


def prompt_shape_table(rows: List[Dict[str, Any]]) -> Dict[Tuple, Dict[Tuple[bool, str], Dict[int, Dict[str, Any]]]]:
    """context -> (frozen, depth) -> P -> {metric: Stat, "trainable_params": Stat}."""
    return _curve_table(
        ok_rows(rows, "prompt-shape"),
        lambda r: (bool(r.get("frozen")), str(r.get("prompt_depth") or "none")),
        lambda r: int(r.get("prompt_length") or 0),
        lambda members: {"trainable_params": make_stat(r.get("trainable_params") for r in members)},
    )


# ------------------------------------------------------------------ conclusions
@dataclass
class Conclusion:
    number: int
    claim: str
    verdict: str
    evidence: List[str] = field(default_factory=list)


def _verdict(checks: List[bool]) -> str:
    if not checks:
        return NO_DATA
    return HELD if all(checks) else NOT_HELD


def _mean_scores(rows: List[Dict[str, Any]], key: Callable[[Dict[str, Any]], Tuple]) -> Dict[Tuple, float]:
    out = {}
    for k, members in _group(rows, key).items():
        stat = make_stat(run_score(r) for r in members)
        if stat is not None:
            out[k] = stat.mean
    return out


def _backbone_size(rows: List[Dict[str, Any]], backbone: str) -> Optional[float]:
    sizes = [r.get("total_params") for r in rows if r.get("backbone") == backbone and r.get("total_params")]
    return statistics.median(sizes) if sizes else None


def conclusion_soft_beats_hard_and_finetune(rows: List[Dict[str, Any]]) -> Conclusion:
    claim = "Unfrozen soft prompts beat hard prompts and fine-tuning"
    data = ok_rows(rows, "strategies")
    means = _mean_scores(data, lambda r: context_of(r) + (str(r.get("strategy")),))
    checks, evidence = [], []
    for ctx in sorted({k[:4] for k in means}):
        soft = means.get(ctx + ("soft",))
        if soft is None:
            continue
        mode, backbone, train, test = ctx
        baselines = {"hard": means.get(ctx + ("hard",))}
        finetune = means.get(ctx + ("finetune",))
        if finetune is None and mode != "single":
            finetune = means.get(("single", backbone, train, test, "finetune"))
        baselines["finetune"] = finetune
        present = {name: value for name, value in baselines.items() if value is not None}
        if not present:
            continue
        ok = all(soft > value for value in present.values())
        checks.append(ok)
        parts = ", ".join(f"{name} {100 * value:.1f}" for name, value in present.items())
        evidence.append(f"{_context_label(ctx)}: soft {100 * soft:.1f} vs {parts} -> {'yes' if ok else 'no'}")
    if not checks:
        evidence.append("needs strategies runs of `soft` and of `hard` or `finetune` on the same data")
    return Conclusion(1, claim, _verdict(checks), evidence)


def conclusion_frozen_needs_size(rows: List[Dict[str, Any]]) -> Conclusion:
    claim = "Frozen soft prompts need larger models to keep up (the unfrozen - frozen gap shrinks with model size)"
    data = ok_rows(rows, "strategies")
    means = _mean_scores(data, lambda r: context_of(r) + (str(r.get("strategy")),))
    gaps: Dict[Tuple, Dict[str, float]] = {}
    for (mode, backbone, train, test, strategy), soft in means.items():
        if strategy != "soft":
            continue
        frozen = means.get((mode, backbone, train, test, "soft-frozen"))
        if frozen is not None:
            gaps.setdefault((mode, train, test), {})[backbone] = soft - frozen
    checks, evidence = [], []
    for (mode, train, test), by_backbone in sorted(gaps.items()):
        sized = [(b, g, _backbone_size(data, b)) for b, g in by_backbone.items()]
        sized = [s for s in sized if s[2] is not None]
        if len(sized) < 2:
            continue
        sized.sort(key=lambda s: s[2])
        smallest, largest = sized[0], sized[-1]
        ok = smallest[1] > 0 and largest[1] < smallest[1]
        checks.append(ok)
        steps = "; ".join(f"{short_backbone(b)} ({size / 1e6:.0f}M params): gap {100 * g:+.1f}" for b, g, size in sized)
        evidence.append(f"{mode} · {train} → {test}: {steps} -> {'yes' if ok else 'no'}")
    if not checks:
        evidence.append("needs strategies runs of `soft` and `soft-frozen` on at least two backbones")
    return Conclusion(2, claim, _verdict(checks), evidence)


def conclusion_frozen_transfers(rows: List[Dict[str, Any]]) -> Conclusion:
    claim = "Frozen backbones transfer better across sources (smaller in-domain -> cross-source drop)"
    table = transfer_table(rows)
    contexts = _group(table.items(), lambda item: (item[0][0], item[0][1], item[0][3]))
    checks, evidence = [], []
    for (mode, backbone, source), items in sorted(contexts.items()):
        drops = {key[2]: value["drop"]["score"] for key, value in items if value["drop"]["score"] is not None}
        frozen = {s: d.mean for s, d in drops.items() if table[(mode, backbone, s, source)]["frozen"]}
        unfrozen = {s: d.mean for s, d in drops.items() if not table[(mode, backbone, s, source)]["frozen"]}
        if not frozen or not unfrozen:
            continue
        ok = all(f < u for f in frozen.values() for u in unfrozen.values())
        checks.append(ok)
        text = ", ".join(f"{s} {100 * d:+.1f}" for s, d in sorted({**frozen, **unfrozen}.items(), key=lambda x: strategy_sort(x[0])))
        evidence.append(f"{mode} · {short_backbone(backbone)} · from {source}: drop {text} -> {'yes' if ok else 'no'}")
    if not checks:
        evidence.append(
            "needs transfer runs of a frozen and an unfrozen strategy scored in-domain (a test set named like the "
            "training corpus, or dev) and on another source"
        )
    return Conclusion(3, claim, _verdict(checks), evidence)


def conclusion_frozen_few_shot(rows: List[Dict[str, Any]]) -> Conclusion:
    claim = f"Frozen backbones learn better from few examples (small k: k <= {SMALL_K}, else the smallest k)"
    table = fewshot_table(rows)
    checks, evidence = [], []
    for ctx, strategies in sorted(table.items()):
        frozen = {s: ks for s, ks in strategies.items() if any(c["frozen"] for c in ks.values())}
        unfrozen = {s: ks for s, ks in strategies.items() if s not in frozen}
        if not frozen or not unfrozen:
            continue
        ks = sorted(
            {
                k
                for k in set().union(*(set(v) for v in frozen.values()))
                if k is not None
                and any(ks_.get(k, {}).get("score") for ks_ in frozen.values())
                and any(ks_.get(k, {}).get("score") for ks_ in unfrozen.values())
            }
        )
        if not ks:
            continue
        small = [k for k in ks if k <= SMALL_K] or ks[:1]
        for k in small:
            f_scores = {s: v[k]["score"].mean for s, v in frozen.items() if v.get(k, {}).get("score")}
            u_scores = {s: v[k]["score"].mean for s, v in unfrozen.items() if v.get(k, {}).get("score")}
            ok = all(f > u for f in f_scores.values() for u in u_scores.values())
            checks.append(ok)
            text = ", ".join(
                f"{s} {100 * v:.1f}" for s, v in sorted({**f_scores, **u_scores}.items(), key=lambda x: strategy_sort(x[0]))
            )
            evidence.append(f"{_context_label(ctx)}, k={k}: {text} -> {'yes' if ok else 'no'}")
    if not checks:
        evidence.append("needs few-shot runs of a frozen and an unfrozen strategy at the same k")
    return Conclusion(4, claim, _verdict(checks), evidence)


def check_conclusions(rows: List[Dict[str, Any]]) -> List[Conclusion]:
    rows = latest_rows(rows)
    return [
        conclusion_soft_beats_hard_and_finetune(rows),
        conclusion_frozen_needs_size(rows),
        conclusion_frozen_transfers(rows),
        conclusion_frozen_few_shot(rows),
    ]


# ------------------------------------------------------------------ plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_strategies(entries: List[Dict[str, Any]], path: Path) -> Optional[Path]:
    if not entries:
        return None
    plt = _pyplot()
    contexts = list(dict.fromkeys(e["context"] for e in entries))
    ncols = min(2, len(contexts))
    nrows = math.ceil(len(contexts) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 3.8 * nrows), squeeze=False)
    width = 0.2
    for ax, ctx in zip(axes.flat, contexts):
        group = [e for e in entries if e["context"] == ctx]
        xs = range(len(group))
        for i, name in enumerate(F1_KEYS):
            means = [100 * e[name].mean if e[name] else 0.0 for e in group]
            errs = [100 * (e[name].sd or 0.0) if e[name] else 0.0 for e in group]
            ax.bar([x + (i - 1.5) * width for x in xs], means, width, yerr=errs, capsize=2, label=METRIC_LABELS[name])
        ax.set_xticks(list(xs))
        ax.set_xticklabels([e["strategy"] for e in group])
        ax.set_ylabel("F1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title(_context_label(ctx), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(contexts):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="upper left")
    return _save_figure(plt, fig, path)


def _curve_axes(plt, table) -> Tuple[Any, List[Tuple[Any, Tuple, str]]]:
    """A figure of curves, one row per context of ``table`` and one column per
    metric of CURVE_METRICS, and its ``(axes, context, metric)`` triples."""
    contexts = sorted(table)
    fig, axes = plt.subplots(len(contexts), len(CURVE_METRICS), figsize=(5.5 * len(CURVE_METRICS), 3.6 * len(contexts)), squeeze=False)
    return fig, [(ax, ctx, name) for row_axes, ctx in zip(axes, contexts) for ax, name in zip(row_axes, CURVE_METRICS)]


def _finish_curve(ax, ctx: Tuple, name: str, ticks: Dict[float, str], xlabel: str) -> None:
    """Log x axis with ``ticks`` (position -> label), labels, title, grid, legend."""
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([ticks[x] for x in sorted(ticks)])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{METRIC_LABELS[name]} (%)")
    ax.set_title(_context_label(ctx), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save_figure(plt, fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fewshot(table, path: Path) -> Optional[Path]:
    if not table:
        return None
    plt = _pyplot()
    fig, panels = _curve_axes(plt, table)
    for ax, ctx, name in panels:
        ticks: Dict[float, str] = {}
        for strategy in sorted(table[ctx], key=strategy_sort):
            cells = table[ctx][strategy]
            points = []
            for k in sorted(cells, key=_k_sort):
                stat = cells[k].get(name)
                n_docs = cells[k]["n_docs"]
                x = float(k) if k is not None else (n_docs.mean if n_docs else None)
                if stat is None or x is None:
                    continue
                points.append((x, stat))
                ticks[x] = k_label(k) if k is not None else f"all ({int(round(x))})"
            if not points:
                continue
            xs = [p[0] for p in points]
            line = ax.plot(xs, [100 * p[1].mean for p in points], marker="o", label=strategy)[0]
            ax.fill_between(
                xs, [100 * p[1].min for p in points], [100 * p[1].max for p in points], color=line.get_color(), alpha=0.2
            )
        _finish_curve(ax, ctx, name, ticks, "training documents (k)")
    return _save_figure(plt, fig, path)


def _transfer_panels(table) -> List[Tuple[Tuple[str, str, str], List[str], List[str]]]:
    panels = _group(table, lambda key: (key[0], key[1], key[2]))
    out = []
    for (mode, backbone, strategy), keys in sorted(panels.items(), key=lambda item: (item[0][:2], strategy_sort(item[0][2]))):
        sources = sorted({k[3] for k in keys})
        targets = sorted({t for k in keys for t in table[k]["targets"]})
        targets.sort(key=lambda t: (t not in sources, sources.index(t) if t in sources else 0, t))
        out.append(((mode, backbone, strategy), sources, targets))
    return out


def plot_transfer(table, path: Path) -> Optional[Path]:
    if not table:
        return None
    plt = _pyplot()
    panels = _transfer_panels(table)
    height = sum(1.9 + 0.45 * len(sources) for _, sources, _ in panels)
    width = 1.6 + 2.4 * len(CURVE_METRICS) + 0.9 * len(CURVE_METRICS) * max(len(targets) for _, _, targets in panels)
    fig, axes = plt.subplots(
        len(panels), len(CURVE_METRICS), figsize=(width, height), squeeze=False, layout="constrained"
    )
    image = None
    for row_axes, ((mode, backbone, strategy), sources, targets) in zip(axes, panels):
        for ax, name in zip(row_axes, CURVE_METRICS):
            grid = []
            for source in sources:
                cells = table.get((mode, backbone, strategy, source), {}).get("targets", {})
                grid.append([cells.get(t, {}).get(name) for t in targets])
            values = [[100 * s.mean if s else math.nan for s in line] for line in grid]
            image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
            for i, line in enumerate(grid):
                for j, stat in enumerate(line):
                    text = "–" if stat is None else f"{100 * stat.mean:.1f}"
                    ax.text(j, i, text, ha="center", va="center", color="white" if stat is None or stat.mean < 0.6 else "black", fontsize=9)
            ax.set_xticks(range(len(targets)))
            ax.set_xticklabels(targets, rotation=20, fontsize=8)
            ax.set_yticks(range(len(sources)))
            ax.set_yticklabels(sources, fontsize=8)
            ax.set_xlabel("test (target)", fontsize=8)
            ax.set_ylabel("train (source)", fontsize=8)
            ax.set_title(f"{strategy} · {mode} · {short_backbone(backbone)}\n{METRIC_LABELS[name]} (%)", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="F1 (%)")
    return _save_figure(plt, fig, path, tight=False)


def _series_label(series: Tuple[bool, str]) -> str:
    frozen, depth = series
    return f"{depth}, {'frozen' if frozen else 'unfrozen'}"


def plot_prompt_shape(table, path: Path) -> Optional[Path]:
    if not table:
        return None
    plt = _pyplot()
    fig, panels = _curve_axes(plt, table)
    styles = {False: "-", True: "--"}
    for ax, ctx, name in panels:
        lengths = set()
        for series in sorted(table[ctx]):
            cells = table[ctx][series]
            points = [(p, cells[p][name]) for p in sorted(cells) if cells[p].get(name)]
            if not points:
                continue
            lengths.update(p for p, _ in points)
            xs = [max(p, 0.5) for p, _ in points]
            line = ax.plot(xs, [100 * s.mean for _, s in points], styles[series[0]], marker="o", label=_series_label(series))[0]
            ax.fill_between(xs, [100 * s.min for _, s in points], [100 * s.max for _, s in points], color=line.get_color(), alpha=0.15)
        _finish_curve(ax, ctx, name, {max(p, 0.5): str(p) for p in lengths}, "prompt length P")
    return _save_figure(plt, fig, path)


# ------------------------------------------------------------------ markdown
def _strategy_section(entries: List[Dict[str, Any]], image: Optional[str]) -> List[str]:
    lines = ["## Strategy comparison", ""]
    if not entries:
        return lines + ["No successful `strategies` runs.", ""]
    header = ["mode · backbone · train → test", "strategy", "seeds", "trainable params", "share"]
    header += [f"{METRIC_LABELS[m]}" for m in F1_KEYS] + ["wall s", "peak MB"]
    body = []
    for e in entries:
        trainable, total = e["trainable_params"], e["total_params"]
        share = f"{100 * trainable.mean / total.mean:.2f}%" if trainable and total and total.mean else "–"
        body.append(
            [_context_label(e["context"]), e["strategy"], e["n"], _int(trainable.mean if trainable else None), share]
            # a figure from fewer runs than the row's seeds (a metric missing in some) says its own n
            + [pct(e[m], n=e[m] is not None and e[m].n != e["n"]) for m in F1_KEYS]
            + [_int(e["wall_seconds"].mean if e["wall_seconds"] else None), _int(e["peak_mb"].mean if e["peak_mb"] else None)]
        )
    lines += [_table(header, body, ["---", "---"] + ["---:"] * (len(header) - 2)), ""]
    lines += ["F1 in %, mean ± sample sd over the `seeds` runs (sd when there are two or more)."]
    if image:
        lines += ["", f"![strategy comparison]({image})"]
    return lines + [""]


def _interval(result: Optional[BootstrapResult]) -> str:
    if result is None:
        return "–"
    text = result.format()
    return f"**{text}**" if result.excludes_zero else text


def _bootstrap_section(items: List[Dict[str, Any]]) -> List[str]:
    lines = ["### Paired bootstrap: best strategy vs each other one", ""]
    if not items:
        return lines + ["Needs two or more strategies on the same data.", ""]
    header = ["mode · backbone · train → test", "best", "vs", "seeds (best / other)"]
    header += [f"{METRIC_LABELS[k + '_f']}: best − other" for k in BOOTSTRAP_KEYS]
    body = []
    for item in items:
        cells = [_interval(item["results"].get(k)) for k in BOOTSTRAP_KEYS]
        if item["error"]:
            cells = [f"– ({item['error']})"] + ["–"] * (len(BOOTSTRAP_KEYS) - 1)
        body.append([_context_label(item["context"]), item["best"], item["other"], f"{item['n_best']} / {item['n_other']}"] + cells)
    lines += [_table(header, body, ["---"] * 3 + ["---:"] * (len(header) - 3)), ""]
    some = next((r for item in items for r in item["results"].values()), None)
    detail = f" ({some.n_resamples} resamples, seed {some.seed}, {some.n_docs} documents)" if some else ""
    lines += [
        "Difference of micro F1 in points with its 95% interval: test documents resampled with replacement"
        f"{detail}, the same draw for both strategies, the seeds of each strategy pooled per document; "
        "best = highest mean score (entity and relation strict F1) over seeds. Bold: the interval excludes 0."
    ]
    return lines + [""]


def _curve_tables(
    table,
    xs: Sequence[Any],
    metrics: Sequence[str],
    title: Callable[[str, List[int]], str],
    columns: Sequence[str],
    series_cells: Callable[[Any], List[str]],
    x_header: Callable[[Any], str],
    value: Callable[[Dict[Any, Dict[str, Any]], Any, str, bool], str],
    series_order: Optional[Callable[[Any], Any]] = None,
) -> List[str]:
    """One markdown table per metric of a curve table (context -> series -> x ->
    cells): a row per (context, series), the series' ``columns``, a column per x.
    ``value(cells, x, metric, per_cell)``: a cell's text; ``per_cell``: the
    figures come from different numbers of seeds (each then says its n)."""
    lines: List[str] = []
    for name in metrics:
        counts = seed_counts(c.get(name) for by_series in table.values() for cells in by_series.values() for c in cells.values())
        lines += [title(name, counts), ""]
        header = ["mode · backbone · train → test"] + list(columns) + [x_header(x) for x in xs]
        body = []
        for ctx in sorted(table):
            for series in sorted(table[ctx], key=series_order):
                cells = table[ctx][series]
                body.append([_context_label(ctx)] + series_cells(series) + [value(cells, x, name, len(counts) > 1) for x in xs])
        lines += [_table(header, body, ["---"] * (1 + len(columns)) + ["---:"] * len(xs)), ""]
    return lines


def _fewshot_section(table, image: Optional[str]) -> List[str]:
    lines = ["## Few-shot learning curves", ""]
    if not table:
        return lines + ["No successful `fewshot` runs.", ""]
    ks = sorted({k for strategies in table.values() for cells in strategies.values() for k in cells}, key=_k_sort)
    lines += _curve_tables(
        table,
        ks,
        CURVE_METRICS,
        title=lambda name, counts: (
            f"**{METRIC_LABELS[name]}** (%, mean ± sd over seeds; {seed_note(counts)}) by number of training documents k:"
        ),
        columns=["strategy"],
        series_cells=lambda strategy: [strategy],
        x_header=lambda k: f"k={k_label(k)}",
        value=lambda cells, k, name, per_cell: pct(cells.get(k, {}).get(name), n=per_cell),
        series_order=strategy_sort,
    )
    lines += ["Subsets are nested per seed (the k=5 documents are among the k=10 ones of the same seed)."]
    if image:
        lines += ["", f"![few-shot curves]({image})", "", "Lines: mean over seeds; bands: min..max over seeds."]
    return lines + [""]


def _transfer_section(table, image: Optional[str]) -> List[str]:
    lines = ["## Cross-source transfer", ""]
    if not table:
        return lines + ["No successful `transfer` runs.", ""]
    for name in CURVE_METRICS:
        counts = seed_counts(
            [c.get(name) for v in table.values() for c in v["targets"].values()] + [v["drop"].get(name) for v in table.values()]
        )
        per_cell = len(counts) > 1
        lines += [f"**{METRIC_LABELS[name]}** (%, mean ± sd over seeds; {seed_note(counts)}), rows: training source, columns: test set:", ""]
        all_targets = sorted({t for v in table.values() for t in v["targets"]})
        header = ["mode · backbone", "strategy", "source"] + all_targets + ["in-domain → cross drop"]
        body = []
        for key in sorted(table, key=lambda k: (k[:2], strategy_sort(k[2]), k[3])):
            mode, backbone, strategy, source = key
            value = table[key]
            cells = [pct(value["targets"].get(t, {}).get(name), n=per_cell) for t in all_targets]
            drop = value["drop"].get(name)
            drop_text = "–" if drop is None else f"{100 * drop.mean:+.1f}" + (f" ± {100 * drop.sd:.1f}" if drop.sd else "")
            if drop is not None and per_cell:
                drop_text += f" (n={drop.n})"
            label = f"{strategy}{' (frozen)' if value['frozen'] and 'frozen' not in strategy else ''}"
            body.append([f"{mode} · {short_backbone(backbone)}", label, source] + cells + [drop_text])
        lines += [_table(header, body, ["---"] * 3 + ["---:"] * (len(all_targets) + 1)), ""]
    lines += [
        "In-domain = the test set named like the training source (else its dev set); drop = in-domain minus the "
        "mean over the other sources, per run, then averaged over seeds."
    ]
    if image:
        lines += ["", f"![transfer matrix]({image})"]
    return lines + [""]


def _prompt_shape_section(table, image: Optional[str]) -> List[str]:
    lines = ["## Prompt length and depth", ""]
    if not table:
        return lines + ["No successful `prompt-shape` runs.", ""]

    def title(name: str, counts: List[int]) -> str:
        what = "trainable parameters" if name == "trainable_params" else f"{METRIC_LABELS[name]} (%, mean ± sd over seeds; {seed_note(counts)})"
        return f"**{what}** by prompt length P:"

    def value(cells, p, name: str, per_cell: bool) -> str:
        if name == "trainable_params":
            return _int(cells[p][name].mean) if p in cells and cells[p][name] else "–"
        return pct(cells.get(p, {}).get(name), n=per_cell)

    lengths = sorted({p for by_series in table.values() for cells in by_series.values() for p in cells})
    lines += _curve_tables(
        table,
        lengths,
        CURVE_METRICS + ("trainable_params",),
        title=title,
        columns=["depth", "backbone frozen"],
        series_cells=lambda series: [series[1], "yes" if series[0] else "no"],
        x_header=lambda p: f"P={p}",
        value=value,
    )
    if image:
        lines += [f"![prompt length curves]({image})", "", "Solid: unfrozen backbone; dashed: frozen; bands: min..max over seeds."]
    return lines + [""]


def _failed_section(rows: List[Dict[str, Any]]) -> List[str]:
    failed = [r for r in rows if r.get("status") != "ok"]
    if not failed:
        return []
    body = [[r.get("key"), r.get("error_type"), str(r.get("error") or "")[:160].replace("\n", " ")] for r in failed]
    return ["## Failed runs", "", _table(["run", "error type", "error"], body), ""]


def _conclusions_section(conclusions: List[Conclusion]) -> List[str]:
    lines = [
        "## Conclusions of the study, checked on these results",
        "",
        "Each claim of Peng et al. (2023) is checked mechanically on the rows above: *held* when it holds in every "
        "comparable group, *did not hold* otherwise, *not enough data* when no group has the runs it needs. Score = "
        "mean of entity and relation strict F1; \"beats\" = strictly higher mean over seeds (no significance test here: "
        "read the sd columns and the paired bootstrap intervals of the strategy comparison).",
        "",
    ]
    for c in conclusions:
        lines.append(f"{c.number}. **{c.claim}: {c.verdict}.**")
        lines += [f"   - {text}" for text in c.evidence]
    return lines + [""]


def _overview(rows: List[Dict[str, Any]], source: str) -> List[str]:
    ok = [r for r in rows if r.get("status") == "ok"]
    experiments = _group(rows, lambda r: (r.get("experiment"),))
    counts = ", ".join(f"{e[0]}: {len(v)}" for e, v in sorted(experiments.items(), key=lambda x: str(x[0])))
    backbones = sorted({short_backbone(r.get("backbone")) for r in rows})
    modes = sorted({str(r.get("mode")) for r in rows})
    devices = sorted({str(r.get("device")) for r in rows})
    steps = sorted({str(r.get("max_steps")) for r in rows if r.get("max_steps") is not None})
    total_wall = sum(float(r.get("wall_seconds") or 0) for r in rows if not r.get("reused_from"))
    return [
        "# Prompt learning study: report",
        "",
        f"Results: `{source}` -- {len(rows)} runs ({len(ok)} ok, {len(rows) - len(ok)} failed; {counts}).",
        f"Backbones: {', '.join(backbones) or '–'}; modes: {', '.join(modes) or '–'}; devices: {', '.join(devices) or '–'}; "
        f"max steps: {', '.join(steps) or 'config default'}; compute: {total_wall / 3600:.2f} h of wall time "
        "(runs reused across experiments counted once).",
        "",
        "Scores are n2c2-style micro F1 (`spacy_softprompt.scoring`): strict = same type and offsets, lenient = same "
        "type and overlap; relations end to end. Each run is scored on its primary evaluation set (first test set, "
        "else dev).",
        "",
    ]


def render_report(results: PathLike, out_dir: PathLike, *, plots: bool = True) -> Dict[str, Any]:
    """Write ``report.md``, the PNGs, ``results.csv`` and ``summary.json``;
    returns the summary (aggregates, verdicts, written files)."""
    results, out_dir = Path(results), Path(out_dir)
    rows = latest_rows(read_results(results))
    out_dir.mkdir(parents=True, exist_ok=True)
    strategies = strategy_table(rows)
    fewshot = fewshot_table(rows)
    transfer = transfer_table(rows)
    shape = prompt_shape_table(rows)
    conclusions = check_conclusions(rows)
    images: Dict[str, Optional[str]] = {"strategies": None, "fewshot": None, "transfer": None, "prompt_shape": None}
    plot_note = None
    if plots:
        try:
            _pyplot()
        except ImportError:
            plot_note = "matplotlib is not installed (pip install spacy-softprompt[plots]): no plots."
        else:
            for name, fn, data in (
                ("strategies", plot_strategies, strategies),
                ("fewshot", plot_fewshot, fewshot),
                ("transfer", plot_transfer, transfer),
                ("prompt_shape", plot_prompt_shape, shape),
            ):
                written = fn(data, out_dir / f"{name}.png")
                images[name] = written.name if written else None
    lines = _overview(rows, str(results))
    if plot_note:
        lines += [f"*{plot_note}*", ""]
    lines += _strategy_section(strategies, images["strategies"])
    bootstrap = strategy_bootstrap(rows)
    if strategies:
        lines += _bootstrap_section(bootstrap)
    lines += _fewshot_section(fewshot, images["fewshot"])
    lines += _transfer_section(transfer, images["transfer"])
    lines += _prompt_shape_section(shape, images["prompt_shape"])
    lines += _conclusions_section(conclusions)
    lines += _failed_section(rows)
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
        "conclusions": [asdict(c) for c in conclusions],
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
