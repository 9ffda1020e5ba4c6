"""The study's four claims checked on result rows (held / did not hold / not enough data)."""
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .labels import context_label, short_backbone
from .results import latest_rows
from .stats import context_of, group, make_stat, ok_rows, run_score, strategy_sort
from .tables import fewshot_table, transfer_table

HELD, NOT_HELD, NO_DATA = "held", "did not hold", "not enough data"
SMALL_K = 10  # few-shot "small k": every k <= 10 (else the smallest k run)


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
    for k, members in group(rows, key).items():
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
        evidence.append(f"{context_label(ctx)}: soft {100 * soft:.1f} vs {parts} -> {'yes' if ok else 'no'}")
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
    contexts = group(table.items(), lambda item: (item[0][0], item[0][1], item[0][3]))
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
            evidence.append(f"{context_label(ctx)}, k={k}: {text} -> {'yes' if ok else 'no'}")
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
