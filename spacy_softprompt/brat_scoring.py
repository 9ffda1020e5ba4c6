"""Score a predicted brat folder against a gold one (the ``score`` command).

Documents are paired by path relative to each folder (without extension).
Gold documents are found through their ``.txt`` (a corpus has its notes);
predictions through their ``.ann``: a prediction folder may hold annotations
only, the note text is then taken from the gold ``.txt``.

Items are read per line: one entity per ``T`` line, one relation per ``R``
line (and, with a schema that maps events, one per mapped event argument), in
file order. Lines repeating an item of an earlier line (same type and offsets;
same label and arguments) are named in ``notes`` (file, line, ids; never text)
and counted as the lenient mode says (see :mod:`spacy_softprompt.scoring`):
``"n2c2"`` counts every line, ``"any"`` once.

With a schema, gold items outside it are not scored (counted in
``gold_outside_schema``); predicted lines outside it are false positives: a
``T`` line of a type the schema does not map under the label ``"<type>
(outside schema)"``, an ``R`` line whose argument types are not an allowed
pair of its relation type (say a ``Frequency-Drug`` whose first argument was
predicted as ``Duration``) in the row of its own relation type, as the official
n2c2 script counts it.
"""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .data.brat import BratDocument, decode_text, parse_ann, read_brat_dir, resolve_entity_id
from .data.errors import BratError, BratIssue, IssueCollector
from .data.schema import MappedRelation, Schema, apply_schema, load_schema
from .scoring import LENIENT_MATCHING, Entity, RelationItem, count_documents, make_annotations

MISSING_PRED = ("skip", "miss")
OUTSIDE = " (outside schema)"

PathLike = Union[str, Path]


def default_missing_pred(lenient_matching: str) -> str:
    """``"skip"`` with ``"n2c2"`` (as the official script), ``"miss"`` with ``"any"``."""
    return "skip" if lenient_matching == "n2c2" else "miss"


@dataclass
class ScoringPolicy:
    """How ``score`` counts; :meth:`describe` is what the command prints."""

    matching: str = "any"
    missing_pred: str = "miss"
    schema: Optional[str] = None

    def __post_init__(self) -> None:
        if self.matching not in LENIENT_MATCHING:
            raise BratError(f"--matching must be one of {', '.join(LENIENT_MATCHING)}, not {self.matching!r}")
        if self.missing_pred not in MISSING_PRED:
            raise BratError(f"--missing-pred must be one of {', '.join(MISSING_PRED)}, not {self.missing_pred!r}")

    @property
    def official(self) -> bool:
        return self.matching == "n2c2"

    @property
    def nothing_to_score(self) -> Optional[float]:
        return 0.0 if self.official else None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "matching": self.matching,
            "repeated_lines": "every line counts" if self.official else "counted once",
            "visiting_order": ".ann line order" if self.official else "irrelevant (sets)",
            "missing_pred": self.missing_pred,
            "schema": self.schema,
            "nothing_to_score": self.nothing_to_score,
        }

    def describe(self) -> List[str]:
        """One line per choice, for the command's output."""
        if self.official:
            counting = (
                "counting: n2c2, as the official track2-evaluate-ver4.py: every T/R line counts (a repeated line "
                "is one more item), predictions visited in .ann line order, overlapping matches pared down; "
                "nothing to score prints 0.0"
            )
        else:
            counting = (
                "counting: any, each distinct item once per document (repeated lines collapse), lenient = overlaps "
                "any item of its type; nothing to score prints '-'. Not the official script's counting: quote "
                "n2c2 2018 figures with --matching n2c2"
            )
        missing = (
            "gold documents without a prediction .ann: skip (not scored, as the official script)"
            if self.missing_pred == "skip"
            else "gold documents without a prediction .ann: miss (all their gold items count as missed)"
        )
        schema = (
            f"schema: {self.schema}: gold items outside it are not scored; predicted lines outside it are "
            "false positives: a T line of a type it does not map in a row '<type> (outside schema)', an R line "
            "whose argument types it does not allow in its relation type's row (as the official script)"
            if self.schema
            else "schema: none, every T and R line is scored"
        )
        return [f"policy: {counting}", f"policy: {missing}", f"policy: {schema}"]


@dataclass
class BratItems:
    """The scored items of one side of one document, in file order, with where they come from."""

    entities: List[Entity] = field(default_factory=list)
    relations: List[RelationItem] = field(default_factory=list)
    entity_sources: List[Tuple[str, int]] = field(default_factory=list)  # (id, line) per entity
    relation_sources: List[Tuple[str, int]] = field(default_factory=list)
    outside: Dict[str, Counter] = field(default_factory=lambda: {"ents": Counter(), "rels": Counter()})  # predictions
    dropped: Counter = field(default_factory=Counter)  # "ents"/"rels" -> items the schema does not score (gold)


def brat_items(doc: BratDocument, schema: Optional[Schema], *, predictions: bool) -> BratItems:
    """The items of a brat document that ``score`` counts.

    Gold (``predictions=False``): what the schema maps, the rest is dropped.
    Predictions: what the schema maps, else entities and ``R`` lines already in
    the schema's target labels (a pipeline's output), else the line itself as a
    false positive: an entity under ``"<type> (outside schema)"``, a relation
    under its own type (its arguments cannot match a gold relation's).
    """
    out = BratItems()
    mapped = apply_schema(doc, schema)
    labels: Dict[str, str] = {}
    for ent, label in mapped.entities:
        labels.setdefault(ent.id, label)
    targets = set(schema.entity_labels) if schema is not None else set()
    for ent in doc.entities:
        label = labels.get(ent.id)
        if label is None and predictions and ent.type in targets:
            label = labels[ent.id] = ent.type
        if label is None:
            if not predictions:
                out.dropped["ents"] += 1
                continue
            label = ent.type + OUTSIDE
            out.outside["ents"][label] += 1
        out.entities.append((ent.start, ent.end, label))
        out.entity_sources.append((ent.id, ent.line))

    entities = doc.entity_map()

    def arg(ann_id: str) -> Optional[Entity]:
        resolved = resolve_entity_id(doc, ann_id)
        ent = entities.get(resolved) if resolved is not None else None
        if ent is None:
            return None
        return (ent.start, ent.end, labels.get(ent.id) or ent.type + (OUTSIDE if predictions else ""))

    def mapped_item(r: MappedRelation) -> RelationItem:
        return (r.label, (r.arg1.start, r.arg1.end, labels[r.arg1.id]), (r.arg2.start, r.arg2.end, labels[r.arg2.id]))

    by_line = {r.source: r for r in mapped.relations if r.id is not None}
    for rel in doc.relations:
        found = by_line.get(rel.id)
        item: RelationItem
        if found is not None:
            item = mapped_item(found)
        else:
            a1, a2 = arg(rel.arg1), arg(rel.arg2)
            if a1 is None or a2 is None:
                continue  # an argument names a missing id: reported by the parser
            if schema is None or (predictions and (a1[2], a2[2]) in schema.pairs.get(rel.type, [])):
                item = (rel.type, a1, a2)  # already in the schema's labels
            elif predictions:  # in its type's row, as the official script counts it
                out.outside["rels"][rel.type] += 1
                item = (rel.type, a1, a2)
            else:
                out.dropped["rels"] += 1
                continue
        out.relations.append(item)
        out.relation_sources.append((rel.id, rel.line))
    events = {ev.id: ev.line for ev in doc.events}
    for r in mapped.relations:
        if r.id is None:  # from an event argument ("E3:Effect")
            out.relations.append(mapped_item(r))
            out.relation_sources.append((r.source, events.get(r.source.split(":", 1)[0], 0)))
    return out


def repeated_lines(items: BratItems, file: str, counted: str) -> List[BratIssue]:
    """A note for each line that repeats the item of an earlier line (ids and line numbers, no text)."""
    notes: List[BratIssue] = []
    for values, sources in ((items.entities, items.entity_sources), (items.relations, items.relation_sources)):
        first: Dict[Any, Tuple[str, int]] = {}
        for value, (ann_id, line) in zip(values, sources):
            if value not in first:
                first[value] = (ann_id, line)
                continue
            first_id, first_line = first[value]
            notes.append(
                BratIssue(file, line, ann_id, f"repeats {first_id} (line {first_line}): {counted}", kind="repeated")
            )
    return notes


def official_reading_differs(doc: BratDocument, file: str) -> List[BratIssue]:
    """Notes for discontinuous entities the official script reads differently from us
    (we score the span covering the fragments)."""
    notes: List[BratIssue] = []
    for ent in doc.entities:
        frags = ent.fragments
        if len(frags) >= 4:
            why = (
                f"{len(frags)} fragments: scored as [{ent.start},{ent.end}); the official script reuses the "
                "previous T line's type and offsets here (or crashes on a first line)"
            )
        elif frags[0][0] != ent.start or frags[-1][1] != ent.end:
            why = (
                f"fragments out of order: scored as [{ent.start},{ent.end}); the official script takes "
                f"[{frags[0][0]},{frags[-1][1]}) (first fragment's start, last one's end)"
            )
        else:
            continue
        notes.append(BratIssue(file, ent.line, ent.id, why, kind="official_differs"))
    return notes


def _find_predictions(pred_dir: Path) -> Dict[str, Path]:
    """``doc_id -> .ann`` of a prediction folder (searched recursively)."""
    if not pred_dir.is_dir():
        raise BratError(f"not a directory: {pred_dir}")
    anns = sorted(p for p in pred_dir.glob("**/*.ann") if p.is_file())
    return {p.relative_to(pred_dir).with_suffix("").as_posix(): p for p in anns}


def _read_prediction(ann_path: Path, doc_id: str, gold: BratDocument, collector: IssueCollector) -> Tuple[BratDocument, List[BratIssue]]:
    """A prediction ``.ann``, checked against its own ``.txt`` when there is one, else the gold text."""
    notes: List[BratIssue] = []
    txt = ann_path.with_suffix(".txt")
    text = gold.text
    if txt.is_file():
        text = decode_text(txt.read_bytes(), str(txt), collector)
        if text != gold.text:
            notes.append(
                BratIssue(str(txt), 0, "", "differs from the gold .txt; offsets are compared as they are", kind="text_differs")
            )
    ann = decode_text(ann_path.read_bytes(), str(ann_path), collector)
    return parse_ann(ann, text, doc_id=doc_id, file=str(ann_path), collector=collector), notes


def score_brat_dirs(
    gold_dir: PathLike,
    pred_dir: PathLike,
    *,
    schema: Union[None, str, Path, Schema] = None,
    lenient_matching: str = "any",
    missing_pred: Optional[str] = None,
    strict: bool = False,
) -> Dict[str, Any]:
    """Score a predicted brat folder against a gold one.

    ``missing_pred``: what a gold document without a prediction ``.ann`` counts
    for: ``"skip"`` (not scored, the official script) or ``"miss"`` (its gold
    items are missed); default :func:`default_missing_pred`. Returns the score
    dict of :func:`~spacy_softprompt.scoring.score_documents` plus ``policy``,
    ``n_docs`` (gold documents), ``n_scored``, ``missing_predictions``,
    ``unmatched_predictions`` (prediction files without gold, not scored),
    ``outside_schema`` (predicted lines outside the schema, by label, also
    counted in the per-type rows), ``gold_outside_schema``, ``repeated`` (repeated lines
    per side), ``notes`` (repeats, readings that differ from the official
    script, prediction texts that differ from gold) and ``issues`` (problems
    found while reading).
    """
    loaded = load_schema(schema) if schema is not None else None
    policy = ScoringPolicy(
        lenient_matching,
        missing_pred if missing_pred is not None else default_missing_pred(lenient_matching),
        None if loaded is None else loaded.name,
    )
    counted = "counted again, as the official script counts every line" if policy.official else "counted once (--matching any)"
    collector = IssueCollector(strict=strict)
    gold = {d.doc_id: d for d in read_brat_dir(gold_dir, recursive=True, collector=collector)}
    pred_files = _find_predictions(Path(pred_dir))
    notes: List[BratIssue] = []
    repeated = Counter()
    outside: Dict[str, Counter] = {"ents": Counter(), "rels": Counter()}
    gold_dropped = Counter()
    pairs = []
    for doc_id, gold_doc in sorted(gold.items()):
        if doc_id not in pred_files and policy.missing_pred == "skip":
            continue
        g = brat_items(gold_doc, loaded, predictions=False)
        gold_dropped.update(g.dropped)
        found = repeated_lines(g, gold_doc.source, counted)
        repeated["gold"] += len(found)
        notes += found + official_reading_differs(gold_doc, gold_doc.source)
        if doc_id in pred_files:
            pred_doc, text_notes = _read_prediction(pred_files[doc_id], doc_id, gold_doc, collector)
            p = brat_items(pred_doc, loaded, predictions=True)
            found = repeated_lines(p, pred_doc.source, counted)
            repeated["pred"] += len(found)
            notes += text_notes + found + official_reading_differs(pred_doc, pred_doc.source)
            for kind in outside:
                outside[kind].update(p.outside[kind])
        else:
            p = BratItems()
        pairs.append((make_annotations(g.entities, g.relations), make_annotations(p.entities, p.relations)))
    scores = count_documents(pairs, lenient_matching=lenient_matching).scores(nothing_to_score=policy.nothing_to_score)
    scores.update(
        policy=policy.to_dict(),
        n_docs=len(gold),
        n_scored=len(pairs),
        missing_predictions=sorted(set(gold) - set(pred_files)),
        unmatched_predictions=sorted(set(pred_files) - set(gold)),
        outside_schema={kind: dict(sorted(c.items())) for kind, c in outside.items()},
        gold_outside_schema={"ents": gold_dropped["ents"], "rels": gold_dropped["rels"]},
        repeated={"gold": repeated["gold"], "pred": repeated["pred"]},
        notes=[n.to_dict() for n in notes],
        issues=len(collector.issues),
    )
    return scores
