"""The study's four questions answered from intervals, next to the source study's claims.

Each question is a set of comparisons "A - B > 0" of the study's score (mean of
entity and relation strict F1) between strategies run on the same documents.
A comparison gets a paired bootstrap interval over documents
(:mod:`.intervals`, seeds pooled) and the seed spread, and a verdict from
:func:`~.intervals.judge` (held / not held / inconclusive); a question's verdict
combines its comparisons (:func:`~.intervals.combine`). Runs recorded without
per-document counts give no interval: their comparison is inconclusive.

1. Soft prompts beat hard prompts and fine-tuning when the backbone is trained:
   soft - hard and soft - finetune (``strategies``).
2. Frozen small models lag behind unfrozen ones: soft - soft-frozen
   (``strategies``; one backbone size here, so the size trend itself is not tested).
3. Frozen models learn better from few examples: soft-frozen - each unfrozen
   strategy at the small k (k <= 10, else the smallest k run; ``fewshot``).
4. Frozen models transfer better to another source: drop(unfrozen) -
   drop(frozen), drop = in-domain score - cross-source score (``transfer``).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .intervals import INCONCLUSIVE, NO_DATA, combine, drop_difference, judge, score_difference, seed_spread
from .labels import context_label, short_backbone
from .results import latest_rows
from .stats import context_of, group, k_value, ok_rows, per_doc_of, run_score, strategy_sort
from .tables import cross_names, in_domain_name

SMALL_K = 10  # few-shot "small k": every k <= 10 (else the smallest k run)
UNFROZEN = ("finetune", "hard", "soft")

QUESTIONS = {
    1: "Soft prompts beat hard prompts and fine-tuning when the backbone is trained",
    2: "Frozen small models lag behind unfrozen ones",
    3: "Frozen models learn better from few examples",
    4: "Frozen models transfer better to another source",
}
SOURCE_CLAIMS = {
    1: "yes: with unfrozen LLMs, soft prompting beat hard prompting and traditional fine-tuning",
    2: "yes: frozen LLMs need billions of parameters to be competitive with unfrozen ones",
    3: "yes: frozen LLMs showed better few-shot learning",
    4: "yes: frozen LLMs transferred better across institutions",
}
SOURCE = "Peng et al. 2023, J Biomed Inform 153:104630"


@dataclass
class Comparison:
    """One "A - B > 0" comparison: the interval (points), the seed figures, the verdict."""

    label: str
    verdict: str
    observed: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None
    seed_gap: Optional[float] = None
    seed_noise: Optional[float] = None
    n_docs: Optional[int] = None
    seeds: Tuple[int, int] = (0, 0)
    note: Optional[str] = None

    def interval_text(self) -> str:
        """The difference, its interval and the seed means, without a verdict."""
        seeds = f"seeds {self.seeds[0]}/{self.seeds[1]}"
        if self.seed_gap is not None:
            seeds += f", seed means {100 * self.seed_gap:+.1f}" + (f" ± {100 * self.seed_noise:.1f}" if self.seed_noise is not None else "")
        if self.low is None:
            return f"{self.label}: no interval ({self.note}); {seeds}"
        return (
            f"{self.label}: {100 * self.observed:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}] points "
            f"over {self.n_docs} documents; {seeds}"
        )

    def text(self) -> str:
        return f"{self.interval_text()} -> {self.verdict}"


@dataclass
class Conclusion:
    number: int
    claim: str
    verdict: str
    evidence: List[str] = field(default_factory=list)
    source_claim: str = ""
    comparisons: List[Dict[str, Any]] = field(default_factory=list)
    provisional: Optional[str] = None  # set while the grid's runs for this question are not all in
    # comparisons that help read the verdict but do not make it (question 4: the scores on the target itself)
    context: List[str] = field(default_factory=list)

    @property
    def verdict_text(self) -> str:
        return self.verdict + (f" (provisional: {self.provisional})" if self.provisional else "")


def _conclusion(number: int, comparisons: List[Comparison], missing: str) -> Conclusion:
    evidence = [c.text() for c in comparisons] or [missing]
    return Conclusion(
        number,
        QUESTIONS[number],
        combine([c.verdict for c in comparisons]),
        evidence,
        SOURCE_CLAIMS[number],
        [dict(c.__dict__) for c in comparisons],
    )


def compare_runs(
    label: str, a: Sequence[Dict[str, Any]], b: Sequence[Dict[str, Any]], eval_name: Optional[str] = None
) -> Comparison:
    """Score(A) - score(B) of two groups of runs (seeds) on their primary evaluation set (or ``eval_name``)."""
    gap, noise = seed_spread([run_score(r, eval_name) or 0.0 for r in a], [run_score(r, eval_name) or 0.0 for r in b])
    docs_a, docs_b = [per_doc_of(r, eval_name) for r in a], [per_doc_of(r, eval_name) for r in b]
    base = Comparison(label, INCONCLUSIVE, seed_gap=gap, seed_noise=noise, seeds=(len(a), len(b)))
    if any(d is None for d in docs_a + docs_b):
        base.note = "no per-document counts"
        return base
    try:
        result = score_difference(docs_a, docs_b)
    except ValueError as error:
        base.note = str(error)[:120]
        return base
    base.observed, base.low, base.high, base.n_docs = result.observed, result.low, result.high, result.n_docs
    base.verdict = judge(result.low, result.high, seed_gap=gap, seed_noise=noise)
    return base


def prompt_shape_comparisons(rows: List[Dict[str, Any]]) -> List[Comparison]:
    """The prompt-shape grid's comparisons, each with a paired bootstrap interval:
    per context and prompt length, deep − input; per context and depth, the
    length with the best mean score − each other length. ``verdict`` reads
    "A − B > 0" (held: A ahead beyond the interval and the seed spread)."""
    cells = group(
        ok_rows(rows, "prompt-shape"),
        lambda r: (context_of(r), bool(r.get("frozen")), str(r.get("prompt_depth") or "none"), int(r.get("prompt_length") or 0)),
    )
    out: List[Comparison] = []
    for ctx, frozen in sorted({key[:2] for key in cells}, key=str):
        where = f"{context_label(ctx)}{', frozen' if frozen else ''}"
        lengths = sorted({key[3] for key in cells if key[:2] == (ctx, frozen)})
        for length in lengths:
            deep, inp = cells.get((ctx, frozen, "deep", length)), cells.get((ctx, frozen, "input", length))
            if deep and inp:
                out.append(compare_runs(f"{where}, P={length}: deep − input", deep, inp))
        for depth in sorted({key[2] for key in cells if key[:2] == (ctx, frozen)}):
            by_length = {length: cells[(ctx, frozen, depth, length)] for length in lengths if (ctx, frozen, depth, length) in cells}
            if len(by_length) < 2:
                continue
            mean = lambda runs: sum(run_score(r) or 0.0 for r in runs) / len(runs)  # noqa: E731
            best = max(by_length, key=lambda length: mean(by_length[length]))
            for length in by_length:
                if length != best:
                    out.append(compare_runs(f"{where}, {depth}: P={best} − P={length}", by_length[best], by_length[length]))
    return out


def _by_strategy(rows: List[Dict[str, Any]], experiment: str) -> Dict[Tuple, Dict[str, List[Dict[str, Any]]]]:
    out: Dict[Tuple, Dict[str, List[Dict[str, Any]]]] = {}
    for (ctx, strategy), members in group(ok_rows(rows, experiment), lambda r: (context_of(r), str(r.get("strategy")))).items():
        out.setdefault(ctx, {})[strategy] = members
    return out


def soft_beats_hard_and_finetune(rows: List[Dict[str, Any]]) -> Conclusion:
    comparisons = []
    for ctx, by in sorted(_by_strategy(rows, "strategies").items()):
        if "soft" not in by:
            continue
        for other in ("hard", "finetune"):
            if other in by:
                comparisons.append(compare_runs(f"{context_label(ctx)}: soft − {other}", by["soft"], by[other]))
    return _conclusion(1, comparisons, "needs strategies runs of soft and of hard or finetune on the same data")


def frozen_small_models_lag(rows: List[Dict[str, Any]]) -> Conclusion:
    comparisons = []
    for ctx, by in sorted(_by_strategy(rows, "strategies").items()):
        if "soft" in by and "soft-frozen" in by:
            comparisons.append(compare_runs(f"{context_label(ctx)}: soft − soft-frozen", by["soft"], by["soft-frozen"]))
    return _conclusion(2, comparisons, "needs strategies runs of soft and soft-frozen on the same data")


def frozen_learn_better_few_shot(rows: List[Dict[str, Any]]) -> Conclusion:
    comparisons = []
    cells = group(ok_rows(rows, "fewshot"), lambda r: (context_of(r), k_value(r.get("k")), str(r.get("strategy"))))
    for ctx in sorted({key[0] for key in cells}):
        ks = sorted({key[1] for key in cells if key[0] == ctx and key[1] is not None})
        for k in [k for k in ks if k <= SMALL_K] or ks[:1]:
            if (ctx, k, "soft-frozen") not in cells:
                continue
            for other in UNFROZEN:
                if (ctx, k, other) in cells:
                    label = f"{context_label(ctx)}, k={k}: soft-frozen − {other}"
                    comparisons.append(compare_runs(label, cells[(ctx, k, "soft-frozen")], cells[(ctx, k, other)]))
    return _conclusion(3, comparisons, "needs few-shot runs of soft-frozen and an unfrozen strategy at the same small k")


def compare_drops(label: str, a: Sequence[Dict[str, Any]], b: Sequence[Dict[str, Any]], target: str) -> Comparison:
    """drop(A) - drop(B) on one cross-source target (each run's in-domain set vs ``target``)."""

    def drop(row):
        inside = in_domain_name(row)
        values = [run_score(row, inside), run_score(row, target)] if inside else [None]
        return None if None in values else values[0] - values[1]

    drops_a, drops_b = [drop(r) for r in a], [drop(r) for r in b]
    base = Comparison(label, INCONCLUSIVE, seeds=(len(a), len(b)))
    if None in drops_a + drops_b:
        base.note = "a run without an in-domain or cross-source score"
        return base
    base.seed_gap, base.seed_noise = seed_spread(drops_a, drops_b)
    docs = [(per_doc_of(r, in_domain_name(r)), per_doc_of(r, target)) for r in list(a) + list(b)]
    if any(d is None for pair in docs for d in pair):
        base.note = "no per-document counts"
        return base
    a_docs, b_docs = docs[: len(a)], docs[len(a):]
    try:
        result = drop_difference([d[0] for d in a_docs], [d[1] for d in a_docs], [d[0] for d in b_docs], [d[1] for d in b_docs])
    except ValueError as error:
        base.note = str(error)[:120]
        return base
    base.observed, base.low, base.high, base.n_docs = result.observed, result.low, result.high, result.n_docs
    base.verdict = judge(result.low, result.high, seed_gap=base.seed_gap, seed_noise=base.seed_noise)
    return base


def frozen_transfer_better(rows: List[Dict[str, Any]]) -> Conclusion:
    """drop(unfrozen) - drop(frozen) per target: the verdict. Beside it, as context, the frozen runs'
    score minus the unfrozen ones' on the target itself: a smaller drop from a lower start can still
    leave the frozen backbone behind on the other source."""
    comparisons, context = [], []
    groups = group(
        ok_rows(rows, "transfer"), lambda r: (str(r.get("mode")), str(r.get("backbone")), str(r.get("train_corpus")), str(r.get("strategy")))
    )
    for mode, backbone, source in sorted({key[:3] for key in groups}):
        frozen = groups.get((mode, backbone, source, "soft-frozen"))
        if not frozen:
            continue
        targets = sorted({t for r in frozen for t in cross_names(r)})
        for other in sorted({key[3] for key in groups if key[:3] == (mode, backbone, source)} & set(UNFROZEN), key=strategy_sort):
            for target in targets:
                label = f"{mode} · {short_backbone(backbone)} · {source} → {target}: drop({other}) − drop(soft-frozen)"
                comparisons.append(compare_drops(label, groups[(mode, backbone, source, other)], frozen, target))
                on_target = f"{mode} · {short_backbone(backbone)} · {source} → {target}, on {target} itself: soft-frozen − {other}"
                context.append(compare_runs(on_target, frozen, groups[(mode, backbone, source, other)], eval_name=target).interval_text())
    conclusion = _conclusion(4, comparisons, "needs transfer runs of soft-frozen and an unfrozen strategy scored in-domain and on another source")
    conclusion.context = context
    return conclusion


def _run_id(key: str) -> str:
    """``experiment/run_id`` -> ``run_id`` (identical runs of two experiments share it)."""
    return key.split("/", 1)[-1]


#: the grid experiment whose runs answer each question
QUESTION_EXPERIMENTS = {1: "strategies", 2: "strategies", 3: "fewshot", 4: "transfer"}


def check_conclusions(rows: List[Dict[str, Any]], planned: Optional[Sequence[str]] = None) -> List[Conclusion]:
    """The four verdicts; with ``planned`` (the run keys a grid plans), a verdict
    reached before all of its experiment's planned runs succeeded is marked provisional.
    A planned run that another experiment already trained (same run id, ``rows``
    holding only current recipes) counts as in: the grid copies it, never trains it again."""
    rows = latest_rows(rows)
    conclusions = [
        soft_beats_hard_and_finetune(rows),
        frozen_small_models_lag(rows),
        frozen_learn_better_few_shot(rows),
        frozen_transfer_better(rows),
    ]
    if planned is not None:
        done = {_run_id(str(r.get("key"))) for r in rows if r.get("status") == "ok"}
        for conclusion in conclusions:
            experiment = QUESTION_EXPERIMENTS[conclusion.number]
            keys = [k for k in planned if k.split("/", 1)[0] == experiment]
            missing = [k for k in keys if _run_id(k) not in done]
            if missing and conclusion.verdict != NO_DATA:
                conclusion.provisional = f"{len(keys) - len(missing)} of {len(keys)} planned {experiment} runs in"
    return conclusions


__all__ = ["Comparison", "Conclusion", "NO_DATA", "QUESTION_EXPERIMENTS", "QUESTIONS", "SOURCE", "SOURCE_CLAIMS", "check_conclusions", "compare_runs"]
