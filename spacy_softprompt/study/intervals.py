"""Intervals behind the study's verdicts, and the verdict rule itself.

* :func:`score_difference` -- paired bootstrap over documents of the study's
  **score** (mean of entity and relation strict micro F1) of system A minus
  system B on the same documents, each system's seeds pooled per document.
* :func:`drop_difference` -- the in-domain -> cross-source **drop** of the score
  (``score(in-domain) - score(cross)``): the documents of the two test sets are
  resampled independently, and with a second system the same draws serve both
  (paired), giving ``drop(A) - drop(B)``.
* :func:`judge` -- the verdict on one comparison, :func:`combine` -- on a claim
  made of several comparisons. Both are pure functions of numbers.

Differences are oriented so that the claim says "positive" (e.g. soft - hard
for "soft beats hard"), in F1 units (0.01 = one point).
"""
import math
import statistics
from typing import List, Optional, Sequence

import numpy as np

from ..bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, BootstrapResult, micro_f1
from ..per_doc import PerDoc, stack

SCORE_KEYS = ("ents_strict", "rels_strict")
HELD, NOT_HELD, INCONCLUSIVE, NO_DATA = "held", "not held", "inconclusive", "not enough data"
MARGIN = 0.01  # one F1 point: an interval inside +-MARGIN means "equal" (the claimed advantage is not there)


def judge(
    low: float,
    high: float,
    *,
    seed_gap: Optional[float] = None,
    seed_noise: Optional[float] = None,
    margin: float = MARGIN,
) -> str:
    """Verdict on "A - B > 0" from the bootstrap interval [low, high] and the seed spread.

    * held: the interval lies above 0 and the seeds agree (the difference of the
      seed means exceeds their spread ``seed_noise``, when there is one);
    * not held: the interval lies below 0 (seeds agreeing likewise), or inside
      [-margin, +margin] with a seed spread within the margin too -- the two
      are equal within ``margin``;
    * inconclusive: otherwise (the interval straddles 0 and is wider than the
      margin, or the seeds spread more than the difference).
    """
    seeds_agree = seed_noise is None or seed_gap is None or abs(seed_gap) > seed_noise
    if low > 0:
        return HELD if seeds_agree and (seed_gap is None or seed_gap > 0) else INCONCLUSIVE
    if high < 0:
        return NOT_HELD if seeds_agree and (seed_gap is None or seed_gap < 0) else INCONCLUSIVE
    if -margin <= low and high <= margin and (seed_noise is None or seed_noise <= margin):
        return NOT_HELD
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """A claim that needs every comparison: held when all held, not held when any is
    not held, not enough data when there is none, else inconclusive."""
    verdicts = [v for v in verdicts if v != NO_DATA]
    if not verdicts:
        return NO_DATA
    if any(v == NOT_HELD for v in verdicts):
        return NOT_HELD
    if all(v == HELD for v in verdicts):
        return HELD
    return INCONCLUSIVE


def seed_spread(a: Sequence[float], b: Sequence[float]) -> tuple:
    """(difference of the seed means, its spread sqrt(sd_a^2 + sd_b^2)); the
    spread is None unless both sides have two or more seeds."""
    gap = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return gap, None
    return gap, math.sqrt(statistics.stdev(a) ** 2 + statistics.stdev(b) ** 2)


def _common_keys(*groups: Sequence[PerDoc]) -> List[str]:
    """The score keys every run has (a run without relations is scored on entities)."""
    keys = [k for k in SCORE_KEYS if all(k in p.counts for runs in groups for p in runs)]
    if not keys:
        raise ValueError("no per-document entity or relation counts shared by the runs")
    return keys


def _pooled(runs: Sequence[PerDoc], ids: Sequence[str], keys: Sequence[str]) -> np.ndarray:
    """(keys, documents, 4): each key's counts, seeds summed per document."""
    return np.stack([stack(runs, key, ids).sum(axis=0) for key in keys])


def _score(counts: np.ndarray) -> np.ndarray:
    """Mean over keys of micro F1: counts (keys, ..., 4) -> (...)."""
    return micro_f1(counts).mean(axis=0)


def _weights(rng: np.random.Generator, n_resamples: int, n_docs: int) -> np.ndarray:
    draws = rng.integers(0, n_docs, size=(n_resamples, n_docs)) + n_docs * np.arange(n_resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=n_resamples * n_docs).reshape(n_resamples, n_docs)


def _result(observed_a, observed_b, diffs, n_docs, n_a, n_b, n_resamples, seed, confidence) -> BootstrapResult:
    alpha = (1 - confidence) / 2
    return BootstrapResult(
        f1_a=float(observed_a),
        f1_b=float(observed_b),
        observed=float(observed_a - observed_b),
        mean=float(diffs.mean()),
        low=float(np.percentile(diffs, 100 * alpha)),
        high=float(np.percentile(diffs, 100 * (1 - alpha))),
        share_a_better=float((diffs > 0).mean()),
        confidence=confidence,
        n_docs=n_docs,
        n_runs_a=n_a,
        n_runs_b=n_b,
        n_resamples=n_resamples,
        seed=seed,
    )


def score_difference(
    a: Sequence[PerDoc], b: Sequence[PerDoc], *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, confidence: float = 0.95
) -> BootstrapResult:
    """Paired bootstrap of score(A) - score(B) (``f1_a``/``f1_b`` hold the two scores)."""
    ids, keys = a[0].ids, _common_keys(a, b)
    counts_a, counts_b = _pooled(a, ids, keys), _pooled(b, ids, keys)  # (keys, docs, 4)
    weights = _weights(np.random.default_rng(seed), n_resamples, len(ids))
    resampled = lambda c: _score(np.einsum("rd,kdc->krc", weights, c))  # noqa: E731
    diffs = resampled(counts_a) - resampled(counts_b)
    return _result(
        _score(counts_a.sum(axis=1)), _score(counts_b.sum(axis=1)), diffs, len(ids), len(a), len(b), n_resamples, seed, confidence
    )


def drop_difference(
    a_in: Sequence[PerDoc],
    a_cross: Sequence[PerDoc],
    b_in: Optional[Sequence[PerDoc]] = None,
    b_cross: Optional[Sequence[PerDoc]] = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Bootstrap of drop(A) - drop(B), drop = score(in-domain) - score(cross-source);
    without B, of drop(A) alone (``f1_a``/``f1_b``: the two drops, B's 0 when absent)."""
    ids_in, ids_cross = a_in[0].ids, a_cross[0].ids
    keys = _common_keys(a_in, a_cross, *([b_in, b_cross] if b_in is not None and b_cross is not None else []))
    rng = np.random.default_rng(seed)
    w_in, w_cross = _weights(rng, n_resamples, len(ids_in)), _weights(rng, n_resamples, len(ids_cross))

    def drops(runs_in, runs_cross):
        c_in, c_cross = _pooled(runs_in, ids_in, keys), _pooled(runs_cross, ids_cross, keys)
        observed = _score(c_in.sum(axis=1)) - _score(c_cross.sum(axis=1))
        resampled = _score(np.einsum("rd,kdc->krc", w_in, c_in)) - _score(np.einsum("rd,kdc->krc", w_cross, c_cross))
        return observed, resampled

    observed_a, resampled_a = drops(a_in, a_cross)
    if b_in is None or b_cross is None:
        observed_b, resampled_b, n_b = 0.0, np.zeros_like(resampled_a), 0
    else:
        (observed_b, resampled_b), n_b = drops(b_in, b_cross), len(b_in)
    return _result(
        observed_a, observed_b, resampled_a - resampled_b, len(ids_in) + len(ids_cross), len(a_in), n_b, n_resamples, seed, confidence
    )
