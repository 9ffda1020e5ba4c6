"""n2c2 2018 Track 2 style evaluation: strict and lenient entity and relation scores.

Items
-----
* An **entity** is ``(start_char, end_char, label)`` with half-open character
  offsets (``text[start:end]``). A discontinuous entity is scored as the span
  covering its fragments (smallest start, largest end). The official n2c2
  script takes the first listed fragment's start and the last one's end: the
  same for two or three fragments in text order, not for fragments listed out
  of order, and it mis-reads four or more fragments (it reuses the previous
  line's type and offsets, or crashes); we keep the covering span there.
* A **relation** is ``(label, arg1, arg2)`` where ``arg1`` and ``arg2`` are
  entities. Arguments are ordered: ``arg1`` is compared with ``arg1`` only.
  Relations are scored end to end: a relation is only right if its arguments
  are right, whether or not the argument entities were predicted as entities.

Repeated items and visiting order depend on the counting mode (below):
with ``"any"`` a document's gold and predicted items are **sets** (an item
given twice, same offsets and label, or same label and arguments for a
relation, counts once); with ``"n2c2"`` every item counts, **in the order
given** (for brat input: one item per ``T``/``R`` line, in ``.ann`` line
order), as the official script counts lines. Items taken from a spaCy ``Doc``
have no lines: they are the distinct items sorted by ``(start, end, label)``
(relations by ``(label, arg1, arg2)``) in both modes. Extra keys of relation
dicts (``id``, ``score``) are ignored.

Matching
--------
* **strict**: a prediction matches a gold item when they are identical (same
  label, identical offsets; for a relation: same label and both arguments
  identical, offsets and entity type).
* **lenient**: same label and the character ranges overlap, i.e.
  ``p.start < g.end and g.start < p.end`` (at least one shared character); for a
  relation: same relation label and ``arg1`` lenient-matches the gold ``arg1``
  and ``arg2`` the gold ``arg2`` (overlap *and* same entity type for both).

Counting (``lenient_matching="any"``, the default)
---------------------------------------------------
Precision and recall are counted separately, each with its own numerator:

* precision = (predictions that match **any** gold item) / (predictions)
* recall = (gold items matched by **any** prediction) / (gold items)
* F1 = 2PR / (P + R)

So one prediction overlapping two gold entities is 1 correct prediction and
2 found gold items; two different predictions overlapping one gold entity are
2 correct predictions and 1 found gold item. In strict mode an item can only
match its identical twin, so both numerators are the usual ``tp`` and the
numbers are the usual ``tp/(tp+fp)``, ``tp/(tp+fn)``.

``lenient_matching="n2c2"`` reproduces the counting of the official 2018
n2c2 Track 2 script (``track2-evaluate-ver4.py``, ``SingleEvaluator``), which
is not the above. For strict and lenient alike it first "pares down" the
predictions: visiting them in the order given, a prediction claims every gold
item it matches, and is dropped (neither TP nor FP) when one of them was
already claimed by an earlier prediction; then ``tp`` = kept predictions that
match a gold item, precision = ``tp / kept``, recall = ``tp / gold`` (so a
prediction that overlaps two gold items only finds one of them). Every item
counts: a repeated spurious prediction is one FP per repetition, a repeated
correct one is dropped by the pare-down, a repeated gold item is one more item
to find (and the prediction that claims both copies finds one). On distinct
items, strict scores are the same in both modes; the visiting order changes
lenient figures when several overlapping predictions compete. A quirk kept
from the script: with nested or overlapping gold items of one type, lenient
can score below strict (an exact copy of gold ``[0,2)`` and ``[0,5)`` gets
lenient recall 1/2: ``[0,2)`` claims both, ``[0,5)`` is dropped).

Aggregation
-----------
Scores are micro averages: numerators and denominators are summed over
documents (and, for the overall numbers, over types) before dividing. Per-type
numbers restrict gold and predictions to one entity type / relation label;
since every match requires the same label, per-type counts add up to the
overall counts.

Undefined values
----------------
Following spaCy's scorers (``PRFScore``): precision is 0.0 without
predictions, recall is 0.0 without gold items, F is 0.0 when P + R = 0. When a
whole collection has neither gold nor predicted entities (or relations), the
six overall values of that kind are ``None`` and its ``*_per_type`` dict is
empty, as spaCy's ``get_ner_prf`` returns ``None`` for "nothing to score" (the
training loop drops ``None`` scores from the weighted score).
``N2C2Counts.scores(nothing_to_score=0.0)`` gives the official script's 0.0
instead (the ``score`` command does so with ``--matching n2c2``).
"""
import operator
from collections import defaultdict
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    DefaultDict,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

from .annotations import ENTITY_SPANS_KEY, get_entities, get_relations

Entity = Tuple[int, int, str]
RelationItem = Tuple[str, Entity, Entity]

LENIENT_MATCHING = ("any", "n2c2")
KINDS = ("ents", "rels")
MODES = ("strict", "lenient")
SCORE_KEYS = tuple(f"{kind}_{mode}_{m}" for kind in KINDS for mode in MODES for m in "prf")
PER_TYPE_KEYS = ("strict_p", "strict_r", "strict_f", "lenient_p", "lenient_r", "lenient_f", "gold", "pred")

#: ``default_score_weights`` of the concept and the relation components: selected
#: on strict F1, precision / recall / lenient F1 / per-type figures reported
ENTITY_SCORE_WEIGHTS: Dict[str, Optional[float]] = {
    "ents_strict_f": 1.0,
    "ents_strict_p": 0.0,
    "ents_strict_r": 0.0,
    "ents_lenient_f": 0.0,
    "ents_per_type": None,
}
RELATION_SCORE_WEIGHTS: Dict[str, Optional[float]] = {
    "rels_strict_f": 1.0,
    "rels_strict_p": 0.0,
    "rels_strict_r": 0.0,
    "rels_lenient_f": 0.0,
    "rels_per_type": None,
}


# ---------------------------------------------------------------------------
# documents


class Annotations(NamedTuple):
    """The entities and relations of one document, in visiting order, repeats kept
    (``"any"`` counting reads them as sets, ``"n2c2"`` counts each one)."""

    entities: Tuple[Entity, ...] = ()
    relations: Tuple[RelationItem, ...] = ()


def as_entity(value: Any) -> Entity:
    """``(start, end, label)`` from a triple, a list or a dict with those keys."""
    if isinstance(value, Mapping):
        value = (value["start"], value["end"], value["label"])
    start, end, label = value
    return (int(start), int(end), str(label))


def as_relation(value: Any) -> RelationItem:
    """``(label, arg1, arg2)`` from a triple or a relation dict (``doc._.relations`` style)."""
    if isinstance(value, Mapping):
        label, arg1, arg2 = value["label"], value["arg1"], value["arg2"]
    else:
        label, arg1, arg2 = value
    return (str(label), as_entity(arg1), as_entity(arg2))


def make_annotations(entities: Iterable[Any] = (), relations: Iterable[Any] = ()) -> Annotations:
    """Normalise entities and relations (tuples, lists or dicts) into :class:`Annotations`,
    keeping their order and repeats (one item per brat line)."""
    return Annotations(
        tuple(as_entity(e) for e in entities),
        tuple(as_relation(r) for r in relations),
    )


def as_annotations(value: Any) -> Annotations:
    """Accept :class:`Annotations`, a dict ``{"entities": ..., "relations": ...}``,
    an ``(entities, relations)`` pair or a spaCy ``Doc``."""
    if isinstance(value, Annotations):
        return value
    if isinstance(value, Doc):
        return doc_annotations(value)
    if isinstance(value, Mapping):
        return make_annotations(value.get("entities", ()), value.get("relations", ()))
    entities, relations = value
    return make_annotations(entities, relations)


def doc_annotations(doc: Doc, spans_key: str = ENTITY_SPANS_KEY) -> Annotations:
    """The entities (span group ``spans_key``, else ``doc.ents``) and relations of a Doc:
    distinct items, sorted (a Doc has no lines to repeat or to visit in order)."""
    found = make_annotations(
        ((s.start_char, s.end_char, s.label_) for s in get_entities(doc, spans_key)),
        get_relations(doc),
    )
    return Annotations(tuple(sorted(set(found.entities))), tuple(sorted(set(found.relations))))


# ---------------------------------------------------------------------------
# counts


@dataclass
class PRCounts:
    """Counts behind one precision / recall pair.

    ``pred_tp / pred`` is the precision and ``gold_tp / gold`` the recall. The
    two numerators are equal for strict matching; lenient matching may make
    them differ (see the module docstring).
    """

    pred: int = 0
    pred_tp: int = 0
    gold: int = 0
    gold_tp: int = 0

    def __iadd__(self, other: "PRCounts") -> "PRCounts":
        self.pred += other.pred
        self.pred_tp += other.pred_tp
        self.gold += other.gold
        self.gold_tp += other.gold_tp
        return self

    def __add__(self, other: "PRCounts") -> "PRCounts":
        out = PRCounts(self.pred, self.pred_tp, self.gold, self.gold_tp)
        out += other
        return out

    @property
    def precision(self) -> float:
        return self.pred_tp / self.pred if self.pred else 0.0

    @property
    def recall(self) -> float:
        return self.gold_tp / self.gold if self.gold else 0.0

    @property
    def fscore(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_list(self) -> List[int]:
        return [self.pred, self.pred_tp, self.gold, self.gold_tp]


TypeCounts = DefaultDict[str, PRCounts]


def _type_counts() -> TypeCounts:
    return defaultdict(PRCounts)


class N2C2Counts:
    """Per-label :class:`PRCounts` for ``ents``/``rels`` × ``strict``/``lenient``.

    Counts of several documents (or several processes) add up with ``+=``;
    :meth:`scores` turns them into the score dict. :meth:`to_dict` /
    :meth:`from_dict` give a compact JSON form:
    ``{"ents_strict": {label: [pred, pred_tp, gold, gold_tp]}, ...}``.
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Dict[str, TypeCounts] = {f"{k}_{m}": _type_counts() for k in KINDS for m in MODES}

    def __getitem__(self, key: str) -> TypeCounts:
        return self.counts[key]

    def __iadd__(self, other: "N2C2Counts") -> "N2C2Counts":
        for key, per_type in other.counts.items():
            for label, c in per_type.items():
                self.counts[key][label] += c
        return self

    def __add__(self, other: "N2C2Counts") -> "N2C2Counts":
        out = N2C2Counts()
        out += self
        out += other
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, N2C2Counts) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"N2C2Counts({self.to_dict()!r})"

    def total(self, key: str) -> PRCounts:
        """Micro counts over all labels of ``key`` (e.g. ``"ents_lenient"``)."""
        out = PRCounts()
        for c in self.counts[key].values():
            out += c
        return out

    def to_dict(self) -> Dict[str, Dict[str, List[int]]]:
        return {key: {label: c.to_list() for label, c in sorted(per_type.items())} for key, per_type in self.counts.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Sequence[int]]]) -> "N2C2Counts":
        out = cls()
        for key, per_type in data.items():
            if key not in out.counts:
                raise ValueError(f"unknown counts key {key!r}; expected one of {sorted(out.counts)}")
            for label, values in per_type.items():
                out.counts[key][label] += PRCounts(*(int(v) for v in values))
        return out

    def scores(self, nothing_to_score: Optional[float] = None) -> Dict[str, Any]:
        """The score dict (see :func:`score_documents`). ``nothing_to_score`` is the
        value of the overall figures of a kind with neither gold nor predicted items:
        ``None`` as spaCy (default), or ``0.0`` as the official n2c2 script prints."""
        result: Dict[str, Any] = {}
        for kind in KINDS:
            strict_total = self.total(f"{kind}_strict")
            lenient_total = self.total(f"{kind}_lenient")
            empty = strict_total.gold == 0 and strict_total.pred == 0
            for mode, tot in (("strict", strict_total), ("lenient", lenient_total)):
                result[f"{kind}_{mode}_p"] = nothing_to_score if empty else tot.precision
                result[f"{kind}_{mode}_r"] = nothing_to_score if empty else tot.recall
                result[f"{kind}_{mode}_f"] = nothing_to_score if empty else tot.fscore
        for kind in KINDS:
            strict, lenient = self.counts[f"{kind}_strict"], self.counts[f"{kind}_lenient"]
            per_type: Dict[str, Dict[str, Any]] = {}
            for label in sorted(set(strict) | set(lenient)):
                s, l_ = strict.get(label, PRCounts()), lenient.get(label, PRCounts())
                if s.gold == 0 and s.pred == 0:
                    continue
                per_type[label] = {
                    "strict_p": s.precision,
                    "strict_r": s.recall,
                    "strict_f": s.fscore,
                    "lenient_p": l_.precision,
                    "lenient_r": l_.recall,
                    "lenient_f": l_.fscore,
                    "gold": s.gold,
                    "pred": s.pred,
                    # spaCy's per-type shape ({"p", "r", "f"}), read by `spacy evaluate`
                    # (cli.evaluate.print_prf_per_type): the strict numbers.
                    "p": s.precision,
                    "r": s.recall,
                    "f": s.fscore,
                }
            result[f"{kind}_per_type"] = per_type
        return result


# ---------------------------------------------------------------------------
# matching


def _overlaps(a: Entity, b: Entity) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _entity_lenient(a: Entity, b: Entity) -> bool:
    return a[2] == b[2] and _overlaps(a, b)


def _relation_lenient(a: RelationItem, b: RelationItem) -> bool:
    return a[0] == b[0] and _entity_lenient(a[1], b[1]) and _entity_lenient(a[2], b[2])


def _by_label(items: Iterable[Any], label_of: Callable[[Any], str]) -> Dict[str, List[Any]]:
    """Items grouped by label, each group in the order given."""
    out: Dict[str, List[Any]] = defaultdict(list)
    for item in items:
        out[label_of(item)].append(item)
    return out


def _count_any(g_items: List[Any], p_items: List[Any], lenient_match: Callable[[Any, Any], bool]) -> Tuple[PRCounts, PRCounts]:
    """``"any"`` counting of one label's distinct items."""
    g_set = set(g_items)
    tp = sum(1 for p in p_items if p in g_set)
    matched_gold = set()
    pred_tp = 0
    for p in p_items:
        hits = [g for g in g_items if lenient_match(p, g)]
        if hits:
            pred_tp += 1
            matched_gold.update(hits)
    return PRCounts(len(p_items), tp, len(g_items), tp), PRCounts(len(p_items), pred_tp, len(g_items), len(matched_gold))


def _pare_down(g_items: Sequence[Any], p_items: Sequence[Any], match: Callable[[Any, Any], bool]) -> PRCounts:
    """The official script's counting of one label: visiting predictions in order, each
    claims the gold items it matches and is dropped when one was claimed before; ``tp``
    = kept predictions matching some gold item. Items are told apart by position, not
    value, so a repeated item is one more item."""
    claimed: Set[int] = set()
    kept = tp = 0
    for p in p_items:
        hits = [i for i, g in enumerate(g_items) if match(p, g)]
        dropped = any(i in claimed for i in hits)
        claimed.update(hits)
        if not dropped:
            kept += 1
            tp += bool(hits)
    return PRCounts(kept, tp, len(g_items), tp)


def _count(
    gold: Sequence[Any],
    pred: Sequence[Any],
    label_of: Callable[[Any], str],
    lenient_match: Callable[[Any, Any], bool],
    lenient_matching: str,
) -> Tuple[TypeCounts, TypeCounts]:
    strict, lenient = _type_counts(), _type_counts()
    if lenient_matching == "any":  # sets, in a fixed order
        gold, pred = sorted(set(gold)), sorted(set(pred))
    gold_by, pred_by = _by_label(gold, label_of), _by_label(pred, label_of)
    for label in set(gold_by) | set(pred_by):
        g_items, p_items = gold_by.get(label, []), pred_by.get(label, [])
        if lenient_matching == "any":
            strict[label], lenient[label] = _count_any(g_items, p_items, lenient_match)
        else:  # "n2c2": every item, in the order given, pared down as the official script does
            strict[label] = _pare_down(g_items, p_items, operator.eq)
            lenient[label] = _pare_down(g_items, p_items, lenient_match)
    return strict, lenient


def _check_mode(lenient_matching: str) -> None:
    if lenient_matching not in LENIENT_MATCHING:
        raise ValueError(f"lenient_matching must be one of {LENIENT_MATCHING}, not {lenient_matching!r}")


def count_document(gold: Any, pred: Any, *, lenient_matching: str = "any") -> N2C2Counts:
    """Counts for one document. ``gold``/``pred``: anything :func:`as_annotations` takes."""
    _check_mode(lenient_matching)
    gold, pred = as_annotations(gold), as_annotations(pred)
    out = N2C2Counts()
    s, l_ = _count(gold.entities, pred.entities, lambda e: e[2], _entity_lenient, lenient_matching)
    out.counts["ents_strict"], out.counts["ents_lenient"] = s, l_
    s, l_ = _count(gold.relations, pred.relations, lambda r: r[0], _relation_lenient, lenient_matching)
    out.counts["rels_strict"], out.counts["rels_lenient"] = s, l_
    return out


def count_documents(pairs: Iterable[Tuple[Any, Any]], *, lenient_matching: str = "any") -> N2C2Counts:
    """Summed counts of ``(gold, pred)`` document pairs."""
    _check_mode(lenient_matching)
    total = N2C2Counts()
    for gold, pred in pairs:
        total += count_document(gold, pred, lenient_matching=lenient_matching)
    return total


def score_documents(pairs: Iterable[Tuple[Any, Any]], *, lenient_matching: str = "any") -> Dict[str, Any]:
    """Micro-averaged n2c2 scores of ``(gold, pred)`` document pairs.

    Each document is :class:`Annotations`, ``{"entities": [...], "relations":
    [...]}``, an ``(entities, relations)`` pair or a ``Doc``; entities are
    ``(start, end, label)``, relations ``(label, arg1, arg2)`` or relation dicts.

    Returns ``ents_strict_{p,r,f}``, ``ents_lenient_{p,r,f}``,
    ``rels_strict_{p,r,f}``, ``rels_lenient_{p,r,f}`` (floats in [0, 1], or
    ``None`` when the collection has neither gold nor predicted items of that
    kind) and ``ents_per_type`` / ``rels_per_type``: ``{label: {"strict_p",
    "strict_r", "strict_f", "lenient_p", "lenient_r", "lenient_f", "gold",
    "pred", "p", "r", "f"}}`` where ``gold``/``pred`` are the numbers of gold /
    predicted items of the label counted by strict matching (``"any"``: distinct
    items; ``"n2c2"``: every item, less the predictions the pare-down drops) and
    ``p``/``r``/``f`` repeat the strict values in spaCy's per-type shape.
    Matching and counting: see the module docstring.
    """
    return count_documents(pairs, lenient_matching=lenient_matching).scores()


# ---------------------------------------------------------------------------
# report


def format_table(scores: Mapping[str, Any], digits: int = 4) -> str:
    """A plain-text table of a score dict: one row per type, then the micro total."""
    header = ["", "gold", "pred", "strict P", "strict R", "strict F", "lenient P", "lenient R", "lenient F"]
    rows: List[List[str]] = []

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    for kind, title in (("ents", "Entities"), ("rels", "Relations")):
        per_type = scores.get(f"{kind}_per_type") or {}
        rows.append([f"{title}:"] + [""] * (len(header) - 1))
        for label, v in per_type.items():
            rows.append(
                [f"  {label}", str(v["gold"]), str(v["pred"])]
                + [fmt(v[f"{mode}_{m}"]) for mode in MODES for m in "prf"]
            )
        rows.append(
            [
                "  Overall (micro)",
                str(sum(v["gold"] for v in per_type.values())),
                str(sum(v["pred"] for v in per_type.values())),
            ]
            + [fmt(scores.get(f"{kind}_{mode}_{m}")) for mode in MODES for m in "prf"]
        )
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header] + rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# spaCy


def count_examples(
    examples: Iterable[Example], spans_key: str = ENTITY_SPANS_KEY, *, lenient_matching: str = "any"
) -> N2C2Counts:
    """Counts of spaCy Examples: ``example.reference`` is gold, ``example.predicted`` the prediction.

    Entities come from ``doc.spans[spans_key]`` (else ``doc.ents``), relations
    from ``doc._.relations``. Everything is in character offsets, so the two
    docs may be tokenized differently.
    """
    return count_documents(
        ((doc_annotations(eg.reference, spans_key), doc_annotations(eg.predicted, spans_key)) for eg in examples),
        lenient_matching=lenient_matching,
    )


def score_examples(
    examples: Iterable[Example], spans_key: str = ENTITY_SPANS_KEY, *, lenient_matching: str = "any"
) -> Dict[str, Any]:
    """n2c2 scores of spaCy Examples (see :func:`score_documents` for the dict)."""
    return count_examples(examples, spans_key, lenient_matching=lenient_matching).scores()


def make_n2c2_scorer(
    spans_key: Optional[str] = None, lenient_matching: str = "any"
) -> Callable[..., Dict[str, Any]]:
    """The ``spacy_softprompt.n2c2_scorer.v1`` scorer, for a component's ``scorer`` setting.

    The returned ``scorer(examples, **kwargs)`` is what ``Pipe.score`` calls
    with the component's ``cfg`` and ``labels`` as keyword arguments; it
    ignores them except ``spans_key``, used when this factory was not given one
    (default ``"entities"``). ``labels`` is ignored on purpose: one component
    does not own both the entity and the relation labels.
    """
    _check_mode(lenient_matching)

    def n2c2_score(examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        key = spans_key if spans_key is not None else kwargs.get("spans_key") or ENTITY_SPANS_KEY
        return score_examples(examples, key, lenient_matching=lenient_matching)

    return n2c2_score


registry.scorers.register("spacy_softprompt.n2c2_scorer.v1", func=make_n2c2_scorer)


__all__ = [
    "Annotations",
    "Entity",
    "RelationItem",
    "PRCounts",
    "N2C2Counts",
    "as_annotations",
    "make_annotations",
    "doc_annotations",
    "count_document",
    "count_documents",
    "score_documents",
    "format_table",
    "count_examples",
    "score_examples",
    "make_n2c2_scorer",
]
