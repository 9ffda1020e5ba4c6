"""How the study report writes names and figures: metric and context labels,
``mean ± sd`` in percent, seed counts, Markdown tables."""
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from .stats import Stat

METRIC_LABELS = {
    "ents_strict_f": "ents strict F1",
    "ents_lenient_f": "ents lenient F1",
    "rels_strict_f": "rels strict F1",
    "rels_lenient_f": "rels lenient F1",
    "score": "score",
}


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


def k_label(k: Optional[int]) -> str:
    return "all" if k is None else str(k)


def short_backbone(name: Any) -> str:
    text = str(name).replace("package:", "")
    parts = [p for p in text.replace("\\", "/").split("/") if p]
    if len(parts) > 2 and not text.startswith(("UFNLP", "http")):
        parts = parts[-2:]
    return "/".join(parts) or text


def context_label(ctx: Tuple[str, str, str, str]) -> str:
    mode, backbone, train, test = ctx
    return f"{mode} · {short_backbone(backbone)} · {train} → {test}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[Sequence[str]] = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_int(value: Optional[float]) -> str:
    return "–" if value is None else f"{int(round(value)):,}"


