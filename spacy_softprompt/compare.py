"""``python -m spacy_softprompt compare A1.json A2.json --vs B1.json B2.json``: two
systems (each one metrics JSON per seed, as ``evaluate --output`` writes) as
mean ± sample sd over seeds, and the paired bootstrap 95% interval of the
difference A - B (:mod:`spacy_softprompt.bootstrap`) from the files' per-document
counts (:mod:`spacy_softprompt.per_doc`).
"""
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, micro_f1, paired_bootstrap
from .per_doc import COUNT_KEYS, PER_DOC_KEY, read_per_doc, stack

PathLike = Union[str, Path]
LABELS = {
    "ents_strict": "ents strict F1",
    "ents_lenient": "ents lenient F1",
    "rels_strict": "rels strict F1",
    "rels_lenient": "rels lenient F1",
}


def load_metrics(path: PathLike) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable metrics JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics")
    return data


def f1_of(metrics: Dict[str, Any], key: str) -> Optional[float]:
    """``<key>_f`` of a metrics dict (None there: nothing to score), else micro F1
    from its per-document counts."""
    if f"{key}_f" in metrics:
        value = metrics[f"{key}_f"]
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(metrics.get(PER_DOC_KEY), dict):
        per_doc = read_per_doc(metrics)
        if key in per_doc.counts:
            return float(micro_f1(per_doc.total(key)))
    return None


def has_figures(metrics: Dict[str, Any], key: str) -> bool:
    """Whether a metrics dict has ``key`` at all (``<key>_f``, even None, or per-document
    counts of it); a baseline without relations has no ``rels_*``."""
    if f"{key}_f" in metrics:
        return True
    data = metrics.get(PER_DOC_KEY)
    if not isinstance(data, dict):
        return False
    return key in data if "ids" in data else bool(data)


def summarize(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    """``{"mean", "sd", "n"}`` of the values given (``sd`` None below two)."""
    values = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def compare_files(
    a_paths: Sequence[PathLike],
    b_paths: Sequence[PathLike],
    *,
    names: Sequence[str] = ("A", "B"),
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Dict[str, Any]:
    """Per metric: each side's mean ± sd over its files and, when every file has
    per-document counts on the same documents, the paired bootstrap of A - B
    (seeds of a side pooled per document). ``bootstrap_error`` says why not otherwise.
    ``missing`` of a metric lists, per side, the files without it (e.g. a baseline
    without relations: that metric is not compared, the others are)."""
    if not a_paths or not b_paths:
        raise ValueError("both sides need at least one metrics file")
    a = [load_metrics(p) for p in a_paths]
    b = [load_metrics(p) for p in b_paths]
    out: Dict[str, Any] = {
        "names": list(names),
        "files": [[str(p) for p in a_paths], [str(p) for p in b_paths]],
        "metrics": {},
        "bootstrap_error": None,
    }
    per_doc = None
    arrays = {}
    try:
        per_doc = ([read_per_doc(m, str(p)) for m, p in zip(a, a_paths)], [read_per_doc(m, str(p)) for m, p in zip(b, b_paths)])
        ids = per_doc[0][0].ids
        for key in COUNT_KEYS:
            if all(key in p.counts for side in per_doc for p in side):  # a key some file lacks is not compared
                arrays[key] = (stack(per_doc[0], key, ids), stack(per_doc[1], key, ids))
    except ValueError as error:
        out["bootstrap_error"] = str(error)
    if per_doc is not None and out["bootstrap_error"] is None:
        check_same_gold(arrays, ids, [str(p) for p in a_paths] + [str(p) for p in b_paths])
    for key in COUNT_KEYS:
        entry: Dict[str, Any] = {
            "a": summarize([f1_of(m, key) for m in a]),
            "b": summarize([f1_of(m, key) for m in b]),
            "bootstrap": None,
            "missing": {
                "a": [str(p) for m, p in zip(a, a_paths) if not has_figures(m, key)],
                "b": [str(p) for m, p in zip(b, b_paths) if not has_figures(m, key)],
            },
        }
        if out["bootstrap_error"] is None and key in arrays:
            entry["bootstrap"] = paired_bootstrap(*arrays[key], n_resamples=n_resamples, seed=seed).to_dict()
        out["metrics"][key] = entry
    if per_doc is not None and out["bootstrap_error"] is None:
        out["n_docs"] = len(per_doc[0][0].ids)
    return out


GOLD = 2  # column of the gold count in a per-document row (pred, pred_tp, gold, gold_tp)


def check_same_gold(arrays: Dict[str, Any], ids: Sequence[str], files: Sequence[str]) -> None:
    """Refuse files whose per-document gold counts differ (scored against other gold,
    another schema or another counting): naming the first document, the metric and both files."""
    for key, (a, b) in arrays.items():
        runs = np.concatenate([a, b])[:, :, GOLD]  # (files, documents)
        differs = np.nonzero((runs != runs[0]).any(axis=0))[0]
        if len(differs):
            doc = int(differs[0])
            other = int(np.nonzero(runs[:, doc] != runs[0, doc])[0][0])
            raise ValueError(
                f"{files[0]} and {files[other]} were not scored against the same gold: document {ids[doc]!r} "
                f"has {runs[0, doc]} vs {runs[other, doc]} gold items in {key} "
                f"({len(differs)} document(s) differ); compare only runs evaluated on the same gold data"
            )


def _pct(summary: Dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "–"
    text = f"{100 * summary['mean']:.1f}"
    text += f" ± {100 * summary['sd']:.1f}" if summary["sd"] is not None else ""
    return f"{text} (n={summary['n']})"


def format_comparison(result: Dict[str, Any]) -> str:
    """A plain-text table of :func:`compare_files`'s result (F1 in %, difference in points)."""
    a_name, b_name = result["names"]
    header = ["", a_name, b_name, f"{a_name} - {b_name} [95% CI]"]
    rows = []
    for key, entry in result["metrics"].items():
        boot = entry["bootstrap"]
        diff = "–"
        if boot is not None:
            diff = f"{100 * boot['observed']:+.1f} [{100 * boot['low']:+.1f}, {100 * boot['high']:+.1f}]"
        rows.append([LABELS[key], _pct(entry["a"]), _pct(entry["b"]), diff])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    some = next((e["bootstrap"] for e in result["metrics"].values() if e["bootstrap"]), None)
    if some is not None:
        lines.append(
            f"F1 in %, mean ± sample sd over the files of each side; difference: micro F1 of the pooled seeds, "
            f"paired bootstrap over {some['n_docs']} documents ({some['n_resamples']} resamples, seed {some['seed']}), "
            "2.5-97.5 percentiles."
        )
    else:
        lines.append(f"no bootstrap: {result['bootstrap_error']}")
    lines += _missing_notes(result)
    return "\n".join(lines)


def _missing_notes(result: Dict[str, Any]) -> List[str]:
    """One line per group of metrics some files lack, e.g. ``rels strict F1, rels lenient
    F1: missing in B (hf.json); not compared``."""
    groups: Dict[tuple, List[str]] = {}
    for key, entry in result["metrics"].items():
        missing = entry.get("missing") or {}
        where = tuple(
            (name, tuple(missing.get(side) or ()))
            for name, side in zip(result["names"], ("a", "b"))
            if missing.get(side)
        )
        if where:
            groups.setdefault(where, []).append(LABELS[key])
    lines = []
    for where, labels in groups.items():
        sides = "; ".join(f"{name} ({', '.join(Path(f).name for f in files)})" for name, files in where)
        lines.append(f"{', '.join(labels)}: missing in {sides}; not compared")
    return lines


def parse_names(value: Optional[str]) -> List[str]:
    if not value:
        return ["A", "B"]
    names = [n.strip() for n in value.split(",")]
    if len(names) != 2 or not all(names):
        raise ValueError(f"--names takes two comma-separated names, got {value!r}")
    return names
