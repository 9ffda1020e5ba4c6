"""Paired bootstrap over documents: a confidence interval for the difference of
micro F1 between two systems scored on the same documents.

Each system is one or several runs (seeds) with per-document counts
``[pred, pred_tp, gold, gold_tp]`` (see :mod:`spacy_softprompt.per_doc`). One
resample draws ``n`` documents with replacement (``n`` = number of documents);
both systems get the same draw (paired). The counts of a system's drawn
documents, over all its seeds, are summed, micro F1 is computed from the sums
(precision ``pred_tp / pred``, recall ``gold_tp / gold``, as
:class:`spacy_softprompt.scoring.PRCounts`), and the difference ``F1(A) -
F1(B)`` is recorded. The interval is the 2.5 / 97.5 percentile of the
differences (percentile bootstrap, 95% by default).
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """F1 of ``[..., 4]`` count arrays ``[pred, pred_tp, gold, gold_tp]``; 0.0 where undefined."""
    counts = np.asarray(counts, dtype=np.float64)
    pred, pred_tp, gold, gold_tp = (counts[..., i] for i in range(4))
    p = np.divide(pred_tp, pred, out=np.zeros_like(pred), where=pred > 0)
    r = np.divide(gold_tp, gold, out=np.zeros_like(gold), where=gold > 0)
    return np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)


@dataclass
class BootstrapResult:
    """``observed``: F1(A) - F1(B) on all documents (seeds pooled); ``mean``,
    ``low``, ``high``: mean and percentile interval of the resampled differences;
    ``share_a_better``: share of resamples with F1(A) > F1(B)."""

    f1_a: float
    f1_b: float
    observed: float
    mean: float
    low: float
    high: float
    share_a_better: float
    confidence: float
    n_docs: int
    n_runs_a: int
    n_runs_b: int
    n_resamples: int
    seed: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """``+3.2 [+0.4, +6.1]`` (percentage points by default)."""
        f = lambda v: f"{scale * v:+.{digits}f}"  # noqa: E731
        return f"{f(self.observed)} [{f(self.low)}, {f(self.high)}]"


def _as_runs(counts: Any) -> np.ndarray:
    array = np.asarray(counts, dtype=np.int64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] != 4:
        raise ValueError(f"expected counts of shape (documents, 4) or (runs, documents, 4), got {array.shape}")
    return array


def paired_bootstrap(
    a: Any,
    b: Any,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap of F1(A) - F1(B). ``a``/``b``: per-document counts of shape
    (documents, 4), or (runs, documents, 4) for several seeds; the documents
    (axis -2) must be the same, in the same order, for every run of both systems."""
    a, b = _as_runs(a), _as_runs(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the systems were scored on different numbers of documents: {a.shape[1]} vs {b.shape[1]}")
    n_docs = a.shape[1]
    if n_docs == 0:
        raise ValueError("no documents")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError("n_resamples must be >= 1 and confidence in (0, 1)")
    doc_a, doc_b = a.sum(axis=0), b.sum(axis=0)  # seeds pooled per document: (documents, 4)
    rng = np.random.default_rng(seed)
    # weights[r, d] = how often document d is drawn in resample r
    draws = rng.integers(0, n_docs, size=(n_resamples, n_docs)) + n_docs * np.arange(n_resamples)[:, None]
    weights = np.bincount(draws.ravel(), minlength=n_resamples * n_docs).reshape(n_resamples, n_docs)
    diffs = micro_f1(weights @ doc_a) - micro_f1(weights @ doc_b)
    alpha = (1 - confidence) / 2
    f1_a, f1_b = float(micro_f1(doc_a.sum(axis=0))), float(micro_f1(doc_b.sum(axis=0)))
    return BootstrapResult(
        f1_a=f1_a,
        f1_b=f1_b,
        observed=f1_a - f1_b,
        mean=float(diffs.mean()),
        low=float(np.percentile(diffs, 100 * alpha)),
        high=float(np.percentile(diffs, 100 * (1 - alpha))),
        share_a_better=float((diffs > 0).mean()),
        confidence=confidence,
        n_docs=n_docs,
        n_runs_a=a.shape[0],
        n_runs_b=b.shape[0],
        n_resamples=n_resamples,
        seed=seed,
    )
