"""Numbers the study report takes from result rows: per-group statistics over
seeds (:class:`Stat`), a run's score, grouping keys and orderings, and a row's
per-document counts for the paired bootstrap."""
import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..per_doc import PER_DOC_KEY, PerDoc, read_per_doc
from .results import metric

STRATEGY_ORDER = ("finetune", "hard", "soft", "soft-frozen")
CURVE_METRICS = ("ents_strict_f", "rels_strict_f")
BOOTSTRAP_KEYS = ("ents_strict", "rels_strict")


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


def k_sort(k: Optional[int]) -> Tuple[int, int]:
    return (1, 0) if k is None else (0, k)


def strategy_sort(strategy: str) -> Tuple[int, str]:
    return (STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER), strategy)


def group(rows: Iterable[Dict[str, Any]], key: Callable[[Dict[str, Any]], Tuple]) -> Dict[Tuple, List[Dict[str, Any]]]:
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def ok_rows(rows: Iterable[Dict[str, Any]], experiment: Optional[str] = None) -> List[Dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and (experiment is None or r.get("experiment") == experiment)]


def context_of(row: Dict[str, Any]) -> Tuple[str, str, str, str]:
    """(mode, backbone, train corpus, primary evaluation set)."""
    return (str(row.get("mode")), str(row.get("backbone")), str(row.get("train_corpus")), str(row.get("primary_eval")))


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


def flat_entities_of(row: Dict[str, Any], eval_name: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The ``flat_entities`` scores of a run on one evaluation set (default: its primary one):
    recorded when its predictions nest or overlap (MRC), else None."""
    flat = ((row.get("evaluations") or {}).get(eval_name or row.get("primary_eval")) or {}).get("flat_entities")
    return flat if isinstance(flat, dict) else None


def flat_view_of(row: Dict[str, Any], eval_name: Optional[str] = None) -> Tuple[Optional[float], Optional[PerDoc]]:
    """(entity strict F1, per-document entity counts) of a run's non-overlapping view
    (``doc.ents``) on one evaluation set: its ``flat_entities`` scores when its
    predictions nest or overlap (MRC), else its own (they are flat already)."""
    flat = flat_entities_of(row, eval_name)
    if flat is None:
        return row_value(row, "ents_strict_f", eval_name), per_doc_of(row, eval_name)
    try:
        counts = read_per_doc(flat) if isinstance(flat.get(PER_DOC_KEY), dict) else None
    except ValueError:
        counts = None
    return flat.get("ents_strict_f"), counts

