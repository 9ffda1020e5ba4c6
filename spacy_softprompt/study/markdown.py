"""The sections of the study report's Markdown, one function per section."""
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ..bootstrap import BootstrapResult
from .conclusions import SOURCE, Conclusion
from .curve import MIN_GAIN, TAIL
from .labels import METRIC_LABELS, context_label, fmt_int, k_label, markdown_table, pct, seed_counts, seed_note, short_backbone
from .results import F1_KEYS
from .stats import BOOTSTRAP_KEYS, CURVE_METRICS, group, k_sort, strategy_sort


def strategy_section(entries: List[Dict[str, Any]], image: Optional[str]) -> List[str]:
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
            [context_label(e["context"]), e["strategy"] + (" †" if e.get("unconverged") else ""), e["n"], fmt_int(trainable.mean if trainable else None), share]
            # a figure from fewer runs than the row's seeds (a metric missing in some) says its own n
            + [pct(e[m], n=e[m] is not None and e[m].n != e["n"]) for m in F1_KEYS]
            + [fmt_int(e["wall_seconds"].mean if e["wall_seconds"] else None), fmt_int(e["peak_mb"].mean if e["peak_mb"] else None)]
        )
    lines += [markdown_table(header, body, ["---", "---"] + ["---:"] * (len(header) - 2)), ""]
    lines += ["F1 in %, mean ± sample sd over the `seeds` runs (sd when there are two or more)."]
    if image:
        lines += ["", f"![strategy comparison]({image})"]
    return lines + [""]


def _interval(result: Optional[BootstrapResult]) -> str:
    if result is None:
        return "–"
    text = result.format()
    return f"**{text}**" if result.excludes_zero else text


def bootstrap_section(items: List[Dict[str, Any]]) -> List[str]:
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
        body.append([context_label(item["context"]), item["best"], item["other"], f"{item['n_best']} / {item['n_other']}"] + cells)
    lines += [markdown_table(header, body, ["---"] * 3 + ["---:"] * (len(header) - 3)), ""]
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
                body.append([context_label(ctx)] + series_cells(series) + [value(cells, x, name, len(counts) > 1) for x in xs])
        lines += [markdown_table(header, body, ["---"] * (1 + len(columns)) + ["---:"] * len(xs)), ""]
    return lines


def fewshot_section(table, image: Optional[str]) -> List[str]:
    lines = ["## Few-shot learning curves", ""]
    if not table:
        return lines + ["No successful `fewshot` runs.", ""]
    ks = sorted({k for strategies in table.values() for cells in strategies.values() for k in cells}, key=k_sort)
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
        value=lambda cells, k, name, per_cell: pct(cells.get(k, {}).get(name), n=per_cell)
        + (" †" if cells.get(k, {}).get("unconverged") else ""),
        series_order=strategy_sort,
    )
    lines += ["Subsets are nested per seed (the k=5 documents are among the k=10 ones of the same seed)."]
    if image:
        lines += ["", f"![few-shot curves]({image})", "", "Lines: mean over seeds; bands: min..max over seeds."]
    return lines + [""]


def _drop_interval(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return f"– ({value})"
    return _interval(value)


def transfer_section(table, image: Optional[str], intervals: Optional[Dict] = None) -> List[str]:
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
        cross_targets = sorted({t for v in (intervals or {}).values() for t in v})
        header += [f"score drop → {t} [95% CI]" for t in cross_targets]
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
            label += " †" if value.get("unconverged") else ""
            ranges = [_drop_interval((intervals or {}).get(key, {}).get(t)) for t in cross_targets]
            body.append([f"{mode} · {short_backbone(backbone)}", label, source] + cells + [drop_text] + ranges)
        lines += [markdown_table(header, body, ["---"] * 3 + ["---:"] * (len(header) - 3)), ""]
    lines += [
        "In-domain = the test set named like the training source (else its dev set); drop = in-domain minus the "
        "mean over the other sources, per run, then averaged over seeds."
    ]
    if intervals:
        lines += [
            "",
            "Score drop [95% CI]: score (mean of entity and relation strict F1) in-domain minus on the target, in "
            "points, seeds pooled, the documents of each test set resampled independently (bootstrap).",
        ]
    if image:
        lines += ["", f"![transfer matrix]({image})"]
    return lines + [""]


def prompt_shape_section(table, image: Optional[str], comparisons: Sequence[Any] = ()) -> List[str]:
    lines = ["## Prompt length and depth", ""]
    if not table:
        return lines + ["No successful `prompt-shape` runs.", ""]

    def title(name: str, counts: List[int]) -> str:
        what = "trainable parameters" if name == "trainable_params" else f"{METRIC_LABELS[name]} (%, mean ± sd over seeds; {seed_note(counts)})"
        return f"**{what}** by prompt length P:"

    def value(cells, p, name: str, per_cell: bool) -> str:
        if name == "trainable_params":
            return fmt_int(cells[p][name].mean) if p in cells and cells[p][name] else "–"
        return pct(cells.get(p, {}).get(name), n=per_cell) + (" †" if cells.get(p, {}).get("unconverged") else "")

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
    if comparisons:
        lines += [
            "",
            "**Paired bootstrap** of the score (mean of entity and relation strict F1), A − B in points with its 95% "
            "interval over the test documents, seeds pooled; per length deep − input, per depth the best length − "
            "each other one; the word after the arrow reads \"A − B > 0\" by the questions' rule:",
            "",
        ]
        lines += [f"- {c.text()}" for c in comparisons]
    return lines + [""]


def failed_section(rows: List[Dict[str, Any]]) -> List[str]:
    failed = [r for r in rows if r.get("status") != "ok"]
    if not failed:
        return []
    body = [[r.get("key"), r.get("error_type"), str(r.get("error") or "")[:160].replace("\n", " ")] for r in failed]
    return ["## Failed runs", "", markdown_table(["run", "error type", "error"], body), ""]


def _provisional(c: Conclusion) -> str:
    return f" (provisional: {c.provisional})" if c.provisional else ""


def conclusions_section(conclusions: List[Conclusion], image: Optional[str] = None) -> List[str]:
    lines = [
        "## The study's questions, answered from intervals",
        "",
        "Each question is a set of comparisons A − B of the score (mean of entity and relation strict F1) on the same "
        "test documents, oriented so that the claim says A − B > 0. Each comparison has a paired bootstrap 95% "
        "interval over documents (seeds pooled; 2,000 resamples) and the seed spread (difference of the seed means ± "
        "sqrt(sd_A² + sd_B²)). **held**: the interval is above 0 and the seed means differ by more than their "
        "spread; **not held**: the interval is below 0 (seeds agreeing), or inside ±1 point with a seed spread under "
        "1 point (equal within a point); "
        "**inconclusive**: otherwise. A question is held when all its comparisons are, not held when one is not."
        + (" **provisional**: the grid's runs for the question are not all in yet; the verdict may change."
           if any(c.provisional for c in conclusions) else ""),
        "",
        "| # | question | verdict here | source study |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {c.number} | {c.claim} | **{c.verdict}**{_provisional(c)} | {c.source_claim} |" for c in conclusions]
    lines += ["", f"Source study: {SOURCE}.", ""]
    if image:
        lines += [f"![the comparisons and their intervals]({image})", ""]
    for c in conclusions:
        lines.append(f"{c.number}. **{c.claim}: {c.verdict}.**{_provisional(c)}")
        lines += [f"   - {text}" for text in c.evidence]
        lines += [f"   - context, not part of the verdict: {text}" for text in c.context]
    return lines + [""]


def convergence_section(rows: List[Dict[str, Any]]) -> List[str]:
    """Every successful trained run's convergence; the ones not converged (or without a curve) listed."""
    runs = [r for r in rows if r.get("status") == "ok" and not r.get("reused_from")]
    if not runs:
        return []
    flagged = [r for r in runs if (r.get("convergence") or {}).get("converged") is not True]
    lines = [
        "## Convergence",
        "",
        f"A run is converged when its best dev score did not improve by {100 * MIN_GAIN:.1f} points or more over the "
        f"last {int(100 * TAIL)}% of its schedule (dev scored every `eval_frequency` steps; curve in each row's "
        f"`dev_curve`). {len(runs) - len(flagged)} of {len(runs)} trained runs converged.",
        "",
    ]
    if flagged:
        body = []
        stopped_early = 0
        for r in flagged:
            c = r.get("convergence") or {}
            gain = c.get("late_gain")
            ended = _ended_by(r.get("max_steps"), c)
            stopped_early += ended == "early stopping"
            body.append(
                [
                    r.get("key"),
                    r.get("max_steps") if r.get("max_steps") is not None else "–",
                    c.get("last_step", "–") if c else "–",
                    c.get("best_step", "–") if c else "–",
                    "–" if gain is None else f"{100 * gain:+.1f}",
                    ended,
                ]
            )
        lines += ["Not converged (their figures are flagged † in the tables):", ""]
        lines += [markdown_table(["run", "steps", "last step", "best step", "late gain (points)", "ended by"], body), ""]
        if stopped_early:
            lines += [
                f"{stopped_early} of them were ended by early stopping with their best in the last quarter of the "
                "steps they ran, which only a patience under a quarter of the schedule allows: a longer patience "
                "(the grid's `recipes`), not a longer schedule, lets such a run show its plateau (`study run` "
                "warns when a recipe's patience is that short).",
                "",
            ]
    return lines


def _ended_by(max_steps: Any, convergence: Dict[str, Any]) -> str:
    """What ended a run: its schedule, early stopping (last step before max_steps), or unknown."""
    last = convergence.get("last_step")
    if last is None:
        return "– (no dev curve)"
    if isinstance(max_steps, int) and last < max_steps:
        return "early stopping"
    return "its schedule"


def stale_section(stale: List[Dict[str, Any]], planned: Optional[Iterable[str]] = None) -> List[str]:
    """The rows left out; ``planned``: the keys the grid plans now (a stale row whose key is not
    among them is no longer planned at all, rather than planned with another recipe)."""
    if not stale:
        return []
    keys = set(planned) if planned is not None else None
    body = [
        [r.get("key"), r.get("recipe") or "(none recorded)", r.get("finished_at") or "–",
         "no longer planned" if keys is not None and r.get("key") not in keys else "recipe changed"]
        for r in stale
    ]
    return [
        "## Stale runs (left out)",
        "",
        "Trained with a recipe that is no longer current (the config or the budget changed since: `study run` "
        "trains them again), or no longer planned by the grid (e.g. a strategy's prompt length moved, which "
        "changes the run's key): not used in any table.",
        "",
        markdown_table(["run", "recipe", "finished", "why"], body),
        "",
    ]


def mrc_section(entries: List[Dict[str, Any]], pending: Sequence[str] = ()) -> List[str]:
    """The MRC table; ``pending``: the grid's MRC-mode runs not in the results yet."""
    lines = ["## MRC with per-label prompts vs single pass", ""]
    waiting = (
        [f"Not in yet with the grid's recipe: {', '.join(f'`{key}`' for key in pending)} "
         "(earlier MRC runs with another recipe are under Stale runs, left out).", ""]
        if pending else []
    )
    if not entries:
        return lines + (waiting or ["No `mrc` experiment runs with both modes.", ""])
    header = ["backbone · train → test", "strategy", "seeds (single / MRC)"]
    header += [f"{METRIC_LABELS[k + '_f']} single / MRC" for k in BOOTSTRAP_KEYS]
    header += [f"{METRIC_LABELS[k + '_f']}: MRC − single" for k in BOOTSTRAP_KEYS] + ["inference ×", "train step ×"]
    body = []
    for e in entries:
        backbone, train, test = e["context"]
        flag = lambda runs: " †" if any((r.get("convergence") or {}).get("converged") is not True for r in runs) else ""  # noqa: E731
        cells = [f"{pct(e['single_stats'][k + '_f'])}{flag(e['single'])} / {pct(e['mrc_stats'][k + '_f'])}{flag(e['mrc'])}" for k in BOOTSTRAP_KEYS]
        ranges = [_interval(e["results"].get(k)) if not e["error"] else f"– ({e['error']})" for k in BOOTSTRAP_KEYS]
        ratios = [f"{e[name]:.1f}" if e.get(name) else "–" for name in ("inference_ratio", "training_ratio")]
        body.append([f"{short_backbone(backbone)} · {train} → {test}", e["strategy"], f"{len(e['single'])} / {len(e['mrc'])}"] + cells + ranges + ratios)
    lines += [markdown_table(header, body, ["---"] * 3 + ["---:"] * (len(header) - 3)), ""]
    lines += [
        "F1 in %, mean over seeds; MRC − single: paired bootstrap over the test documents, seeds pooled (points, 95% "
        "interval; bold when it excludes 0). Inference ×: single-pass words/s over MRC words/s on the test set (how "
        "many times slower MRC annotates); train step ×: MRC seconds per training step over single-pass ones. "
        "Both ratios come from each run's own timings, taken under whatever else ran on the machine then; "
        "for a side-by-side measurement see docs/mrc.md. †: a run that did not converge."
    ]
    lines += [""] + _flat_view_lines(entries)
    return lines + waiting


def _flat_view_lines(entries: List[Dict[str, Any]]) -> List[str]:
    """MRC's non-overlapping view against the single pass, for the entries that recorded it."""
    out = []
    for e in entries:
        flat = e.get("flat")
        if not flat:
            continue
        backbone, train, test = e["context"]
        out.append(
            f"- {short_backbone(backbone)} · {train} → {test}, {e['strategy']}: entity strict F1 of the non-overlapping "
            f"view single / MRC {pct(flat['single'])} / {pct(flat['mrc'])}, MRC − single {_interval(flat['result'])}"
        )
    if not out:
        return []
    return [
        "MRC keeps nested and overlapping spans in the `entities` span group, which the table scores; against flat "
        "gold every extra nested span is a false positive. Its non-overlapping view (`doc.ents`: longest spans "
        "first), scored against the same gold (relations unchanged):",
        "",
        *out,
        "",
    ]


def overview(rows: List[Dict[str, Any]], source: str) -> List[str]:
    ok = [r for r in rows if r.get("status") == "ok"]
    experiments = group(rows, lambda r: (r.get("experiment"),))
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
