"""The study's aggregate tables from result rows: strategy comparison (and its
paired bootstrap), few-shot curves, transfer matrices and prompt shape."""
import statistics
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_bootstrap
from ..per_doc import stack
from .results import F1_KEYS
from .stats import (
    BOOTSTRAP_KEYS,
    Stat,
    context_of,
    flat_entities_of,
    flat_view_of,
    group,
    k_value,
    make_stat,
    ok_rows,
    per_doc_of,
    row_value,
    strategy_sort,
)


def unconverged(rows: List[Dict[str, Any]]) -> int:
    """How many of the runs have a dev curve that says they had not converged."""
    return sum(1 for r in rows if (r.get("convergence") or {}).get("converged") is False)


def strategy_table(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per (context, strategy): stats of the four F1s and costs."""
    out = []
    groups = group(ok_rows(rows, "strategies"), lambda r: context_of(r) + (str(r.get("strategy")),))
    for key in sorted(groups, key=lambda k: (k[:4], strategy_sort(k[4]))):
        members = groups[key]
        entry = {
            "context": key[:4],
            "strategy": key[4],
            "n": len(members),
            "seeds": sorted({r.get("seed") for r in members}, key=str),
            "unconverged": unconverged(members),
        }
        for name in F1_KEYS + ("score",):
            entry[name] = make_stat(row_value(r, name) for r in members)
        for name in ("trainable_params", "total_params", "wall_seconds", "peak_mb"):
            entry[name] = make_stat(r.get(name) for r in members)
        out.append(entry)
    return out


def strategy_bootstrap(
    rows: List[Dict[str, Any]], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> List[Dict[str, Any]]:
    """Per context of the strategy comparison: the best strategy (highest mean
    score over seeds) against each other one -- paired bootstrap of best - other
    for entity and relation strict F1, documents resampled, seeds of each strategy
    pooled per document. ``error`` says why an entry has no interval."""
    entries = [e for e in strategy_table(rows) if e["score"] is not None]
    groups = group(ok_rows(rows, "strategies"), lambda r: context_of(r) + (str(r.get("strategy")),))
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
            "unconverged": unconverged(members),
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
    groups = group(
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
            "unconverged": unconverged(members),
        }
    return out


def prompt_shape_table(rows: List[Dict[str, Any]]) -> Dict[Tuple, Dict[Tuple[bool, str], Dict[int, Dict[str, Any]]]]:
    """context -> (frozen, depth) -> P -> {metric: Stat, "trainable_params": Stat, "unconverged": int}."""
    return _curve_table(
        ok_rows(rows, "prompt-shape"),
        lambda r: (bool(r.get("frozen")), str(r.get("prompt_depth") or "none")),
        lambda r: int(r.get("prompt_length") or 0),
        lambda members: {
            "trainable_params": make_stat(r.get("trainable_params") for r in members),
            "unconverged": unconverged(members),
        },
    )


def transfer_drop_intervals(rows: List[Dict[str, Any]]) -> Dict[Tuple, Dict[str, Any]]:
    """(mode, backbone, strategy, source) -> cross-source target -> bootstrap of the
    score's drop in-domain -> target (seeds pooled; documents of the two sets
    resampled independently), or the reason there is none (a string)."""
    from .intervals import drop_difference

    out: Dict[Tuple, Dict[str, Any]] = {}
    groups = group(
        ok_rows(rows, "transfer"),
        lambda r: (str(r.get("mode")), str(r.get("backbone")), str(r.get("strategy")), str(r.get("train_corpus"))),
    )
    for key, members in groups.items():
        for target in sorted({t for r in members for t in cross_names(r)}):
            inside = [per_doc_of(r, in_domain_name(r)) if in_domain_name(r) else None for r in members]
            cross = [per_doc_of(r, target) for r in members]
            if any(d is None for d in inside + cross):
                out.setdefault(key, {})[target] = "no per-document counts"
                continue
            try:
                out.setdefault(key, {})[target] = drop_difference(inside, cross)
            except ValueError as error:
                out.setdefault(key, {})[target] = str(error)[:120]
    return out


def mrc_table(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The ``mrc`` experiment: per (backbone, train, test, strategy), the MRC runs
    against the single-pass runs -- F1 stats of both, paired bootstrap of MRC minus
    single pass (entity and relation strict F1, seeds pooled), and cost ratios:
    inference (single-pass words/s over MRC words/s on the evaluation set) and
    training (MRC seconds per step over single-pass ones)."""
    out = []
    groups = group(
        ok_rows(rows, "mrc"),
        lambda r: (str(r.get("backbone")), str(r.get("train_corpus")), str(r.get("primary_eval")), str(r.get("strategy"))),
    )
    for (backbone, train, test, strategy), members in sorted(groups.items()):
        by_mode = group(members, lambda r: str(r.get("mode")))
        single, mrc = by_mode.get("single", []), by_mode.get("mrc", [])
        if not single or not mrc:
            continue
        entry: Dict[str, Any] = {"context": (backbone, train, test), "strategy": strategy, "single": single, "mrc": mrc, "results": {}, "error": None}
        for mode, runs in (("single", single), ("mrc", mrc)):
            entry[f"{mode}_stats"] = {m: make_stat(row_value(r, m) for r in runs) for m in F1_KEYS}
            entry[f"{mode}_wps"] = make_stat(r.get("words_per_second") for r in runs)
            entry[f"{mode}_step_s"] = make_stat(r.get("seconds_per_step") for r in runs)
        if entry["single_wps"] and entry["mrc_wps"] and entry["mrc_wps"].mean > 0:
            entry["inference_ratio"] = entry["single_wps"].mean / entry["mrc_wps"].mean
        if entry["single_step_s"] and entry["mrc_step_s"] and entry["single_step_s"].mean > 0:
            entry["training_ratio"] = entry["mrc_step_s"].mean / entry["single_step_s"].mean
        docs_mrc, docs_single = [per_doc_of(r) for r in mrc], [per_doc_of(r) for r in single]
        if any(d is None for d in docs_mrc + docs_single):
            entry["error"] = "no per-document counts"
        else:
            try:
                ids = docs_single[0].ids
                for key in BOOTSTRAP_KEYS:
                    entry["results"][key] = paired_bootstrap(stack(docs_mrc, key, ids), stack(docs_single, key, ids))
            except ValueError as error:
                entry["error"] = str(error)[:120]
        entry["flat"] = _flat_view_comparison(mrc, single)
        out.append(entry)
    return out


def _flat_view_comparison(mrc: List[Dict[str, Any]], single: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """MRC's non-overlapping view (``doc.ents``) against the single pass, on entity strict F1:
    ``{"mrc": Stat, "single": Stat, "result": bootstrap or None}``; None when no MRC run
    recorded that view (its predictions were flat, or it was evaluated before the view existed)."""
    if all(flat_entities_of(r) is None for r in mrc):
        return None
    mrc_views, single_views = [flat_view_of(r) for r in mrc], [flat_view_of(r) for r in single]
    out: Dict[str, Any] = {
        "mrc": make_stat(f for f, _ in mrc_views),
        "single": make_stat(f for f, _ in single_views),
        "result": None,
    }
    counts_mrc, counts_single = [c for _, c in mrc_views], [c for _, c in single_views]
    if all(c is not None for c in counts_mrc + counts_single):
        try:
            ids = counts_single[0].ids
            out["result"] = paired_bootstrap(stack(counts_mrc, "ents_strict", ids), stack(counts_single, "ents_strict", ids))
        except ValueError:
            out["result"] = None
    return out
