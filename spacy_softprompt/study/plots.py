"""The study report's PNG figures (matplotlib, imported when a plot is drawn)."""
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .labels import METRIC_LABELS, context_label, k_label, short_backbone
from .results import F1_KEYS
from .stats import CURVE_METRICS, group, k_sort, strategy_sort


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_strategies(entries: List[Dict[str, Any]], path: Path) -> Optional[Path]:
    if not entries:
        return None
    plt = pyplot()
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
        ax.set_title(context_label(ctx), fontsize=9)
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
    ax.set_title(context_label(ctx), fontsize=9)
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
    plt = pyplot()
    fig, panels = _curve_axes(plt, table)
    for ax, ctx, name in panels:
        ticks: Dict[float, str] = {}
        for strategy in sorted(table[ctx], key=strategy_sort):
            cells = table[ctx][strategy]
            points = []
            for k in sorted(cells, key=k_sort):
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
    panels = group(table, lambda key: (key[0], key[1], key[2]))
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
    plt = pyplot()
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
    plt = pyplot()
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


def plot_answers(conclusions: List[Any], path: Path, margin: float = 0.01) -> Optional[Path]:
    """One row per comparison of the four questions: its 95% interval (points) with the
    observed difference, 0 and the +-margin band marked, the verdict in the label."""
    items = [(c.number, comparison) for c in conclusions for comparison in c.comparisons if comparison.get("low") is not None]
    if not items:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(items) + 1.4))
    ax.axvspan(-100 * margin, 100 * margin, color="0.9", label=f"±{100 * margin:.0f} point")
    ax.axvline(0, color="0.4", linewidth=0.8)
    colours = {"held": "tab:green", "not held": "tab:red", "inconclusive": "tab:gray"}
    for y, (number, comparison) in enumerate(reversed(items)):
        low, high, observed = (100 * comparison[k] for k in ("low", "high", "observed"))
        colour = colours.get(comparison["verdict"], "black")
        ax.plot([low, high], [y, y], color=colour, linewidth=2)
        ax.plot([observed], [y], "o", color=colour)
    labels = [f"Q{number} {comparison['label'].split(' · ', 1)[-1]} ({comparison['verdict']})" for number, comparison in reversed(items)]
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("A − B, score points (mean of entity and relation strict F1), 95% interval")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save_figure(plt, fig, path)
