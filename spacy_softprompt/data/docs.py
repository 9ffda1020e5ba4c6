"""brat documents <-> spaCy Docs (see :mod:`spacy_softprompt.annotations` for the Doc side).

:func:`brat_to_doc` tokenizes the text, maps annotations through a schema,
aligns entities to tokens (tokenizer alone first, then by splitting tokens at
gold boundaries) and fills ``doc.spans["entities"]``, ``doc.ents``,
``doc._.relations`` and ``doc._.brat``. An entity that cannot be aligned (it
starts or ends in whitespace, or its offsets are invalid) is reported and kept
in ``doc._.brat`` only, so writing the Doc back still writes it.

``doc._.brat`` (plain data, msgpack-safe)::

    {"version": 1, "doc_id": "train/123", "schema": "ddi2013" | None,
     "entities": [{"id": "T4", "type": "AdverseReaction", "label": "AdverseReaction",
                   "start": 10, "end": 30, "fragments": [[10, 15], [22, 30]], "aligned": true}, ...],
     "fragments": [[10, 30, "AdverseReaction", [[10, 15], [22, 30]]], ...],   # discontinuous only
     # keep-everything mode (schema None) only, for a lossless round trip:
     "relations": [{"id": "R1", "type": "MODIFY", "arg1": "T6", "arg2": "E3",
                    "role1": "Arg1", "role2": "Arg2", "resolved": true}, ...],
     "events": [...], "attributes": [...], "notes": [...], "equivalences": [...], "other": [...]}

:func:`doc_to_brat` goes back: entities from the span group (ids, types and
fragments restored from ``doc._.brat`` where the span matches), unaligned
entities from ``doc._.brat``, relations from ``doc._.relations`` (original
``R`` lines, with event arguments and role names, where unchanged), and in
keep-everything mode the events, attributes, notes, equivalences and other
lines as read.
"""
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, Span

from ..annotations import ENTITY_SPANS_KEY, get_relations, make_relation, set_entities
from .brat import (
    BratDocument,
    Entity,
    Relation,
    attribute_from_dict,
    attribute_to_dict,
    equivalence_from_dict,
    equivalence_to_dict,
    event_from_dict,
    event_to_dict,
    note_from_dict,
    note_to_dict,
    relation_to_dict,
    write_brat_document,
)
from .errors import IssueCollector
from .schema import Schema, apply_schema
from .stats import ConversionStats
from .tokenizer import split_at_boundaries

BRAT_VERSION = 1
Key = Tuple[int, int, str]
TokenizerLike = Union[Language, Callable[[str], Doc]]


def _make_doc(nlp_or_tokenizer: TokenizerLike, text: str) -> Doc:
    if isinstance(nlp_or_tokenizer, Language):
        return nlp_or_tokenizer.make_doc(text)
    return nlp_or_tokenizer(text)


def _edges(doc: Doc) -> Tuple[set, set]:
    return {t.idx for t in doc}, {t.idx + len(t.text) for t in doc}


def _alignable(text: str, start: int, end: int) -> bool:
    """Whether a span could ever sit on token edges (non-empty, inside the text,
    no whitespace at either edge)."""
    return 0 <= start < end <= len(text) and not text[start].isspace() and not text[end - 1].isspace()


def _why_unalignable(text: str, start: int, end: int) -> str:
    if not 0 <= start < end <= len(text):
        return "offsets outside the text or empty"
    if text[start].isspace() or text[end - 1].isspace():
        return "it starts or ends in whitespace"
    return "its edges fall inside tokens"


def brat_to_doc(
    nlp_or_tokenizer: TokenizerLike,
    brat_doc: BratDocument,
    schema: Optional[Schema] = None,
    split_gold_boundaries: bool = True,
    collector: Optional[IssueCollector] = None,
    stats: Optional[ConversionStats] = None,
) -> Doc:
    """A Doc with the entities and relations of ``brat_doc`` that ``schema`` keeps.

    ``nlp_or_tokenizer`` is a pipeline (its ``make_doc`` is used) or any
    ``str -> Doc`` callable. With ``schema=None`` everything is kept.
    Unalignable entities are reported to ``collector`` (kind ``alignment``), and
    so are entities of a valued type without a usable attribute value (kind
    ``value``; they are dropped); counts are added to ``stats``.
    """
    collector = collector if collector is not None else IssueCollector()
    stats = stats if stats is not None else ConversionStats()
    text = brat_doc.text
    doc = _make_doc(nlp_or_tokenizer, text)
    mapped = apply_schema(brat_doc, schema)
    stats.documents += 1
    stats.entities += len(mapped.entities)
    stats.entities_dropped += mapped.entities_dropped
    stats.relations_dropped += mapped.relations_dropped
    stats.relations_unresolved += mapped.relations_unresolved
    for ent, why in mapped.entities_unvalued:  # a valued type without a usable value: reported, never silent
        collector.report(
            brat_doc.source or f"{brat_doc.doc_id}.ann", ent.line, ent.id, f"entity dropped: {why}",
            text[ent.start : ent.end], kind="value",
        )

    starts, ends = _edges(doc)
    candidates = [(e, lab) for e, lab in mapped.entities if _alignable(text, e.start, e.end)]
    by_tokenizer = {e.id for e, _ in candidates if e.start in starts and e.end in ends}
    if split_gold_boundaries:
        offsets = {o for e, _ in candidates if e.id not in by_tokenizer for o in (e.start, e.end)}
        if split_at_boundaries(doc, offsets):
            starts, ends = _edges(doc)

    records: List[Dict[str, Any]] = []
    spans: List[Span] = []
    for ent, label in mapped.entities:
        span = None
        if ent.start in starts and ent.end in ends and _alignable(text, ent.start, ent.end):
            span = doc.char_span(ent.start, ent.end, label=label)
        if ent.is_discontinuous:
            stats.discontinuous += 1
        if span is None:
            stats.unalignable += 1
            collector.report(
                brat_doc.source or f"{brat_doc.doc_id}.ann", ent.line, ent.id,
                f"entity cannot be aligned to tokens: {_why_unalignable(text, ent.start, ent.end)} "
                "(kept in doc._.brat)", text[ent.start : ent.end], kind="alignment",
            )
        elif ent.id in by_tokenizer:
            stats.aligned_tokenizer += 1
        else:
            stats.aligned_split += 1
        if span is not None:
            spans.append(span)
        records.append(
            {
                "id": ent.id,
                "type": ent.type,
                "label": label,
                "start": ent.start,
                "end": ent.end,
                "fragments": [[s, e] for s, e in ent.fragments],
                "aligned": span is not None,
            }
        )
    set_entities(doc, spans)

    labels = {rec["id"]: rec["label"] for rec in records}
    relations = []
    for rel in mapped.relations:
        arg1 = (rel.arg1.start, rel.arg1.end, labels[rel.arg1.id])
        arg2 = (rel.arg2.start, rel.arg2.end, labels[rel.arg2.id])
        relations.append(make_relation(rel.label, arg1, arg2, relation_id=rel.id))
    stats.relations += len(relations)
    doc._.relations = relations

    info: Dict[str, Any] = {
        "version": BRAT_VERSION,
        "doc_id": brat_doc.doc_id,
        "schema": schema.name if schema is not None else None,
        "entities": records,
        "fragments": [
            [r["start"], r["end"], r["label"], r["fragments"]] for r in records if len(r["fragments"]) > 1
        ],
    }
    if schema is None:
        resolved = {rel.id for rel in mapped.relations}
        info["relations"] = [dict(relation_to_dict(r), resolved=r.id in resolved) for r in brat_doc.relations]
        info["events"] = [event_to_dict(e) for e in brat_doc.events]
        info["attributes"] = [attribute_to_dict(a) for a in brat_doc.attributes]
        info["notes"] = [note_to_dict(n) for n in brat_doc.notes]
        info["equivalences"] = [equivalence_to_dict(q) for q in brat_doc.equivalences]
        info["other"] = list(brat_doc.other)
    doc._.brat = info
    return doc


def _as_lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def normalize_extensions(doc: Doc) -> Doc:
    """Turn the tuples ``DocBin`` gives back (msgpack) into lists again in
    ``doc._.relations`` and ``doc._.brat``, so they compare equal to freshly built ones."""
    if doc._.relations is not None:
        doc._.relations = _as_lists(doc._.relations)
    if doc._.brat is not None:
        doc._.brat = _as_lists(doc._.brat)
    return doc


def get_fragments(doc: Doc, span: Span) -> List[Tuple[int, int]]:
    """The fragments of an entity span: several for a discontinuous entity, else the span."""
    info = doc._.brat or {}
    for start, end, label, frags in info.get("fragments", []):
        if (start, end, label) == (span.start_char, span.end_char, span.label_):
            return [(s, e) for s, e in frags]
    return [(span.start_char, span.end_char)]


class AnnotationIds:
    """brat ids for writing: ids read from the file are claimed by their own annotations;
    new annotations get fresh numbers that collide with none of them."""

    def __init__(self, reserved: Iterable[str]) -> None:
        self.reserved = set(reserved)
        self.claimed: set = set()
        self.next: Dict[str, int] = defaultdict(lambda: 1)

    def claim(self, ann_id: str) -> str:
        """``ann_id`` itself, unless an earlier annotation already took it."""
        if ann_id in self.claimed:
            return self.new(ann_id[0])
        self.claimed.add(ann_id)
        return ann_id

    def take(self, wanted: Optional[str], prefix: str) -> str:
        """``wanted`` when it is a free ``PREFIXn`` id, else a fresh one."""
        if wanted and re.match(rf"^{prefix}\d+$", wanted) and wanted not in self.reserved | self.claimed:
            self.claimed.add(wanted)
            return wanted
        return self.new(prefix)

    def new(self, prefix: str) -> str:
        while f"{prefix}{self.next[prefix]}" in self.reserved or f"{prefix}{self.next[prefix]}" in self.claimed:
            self.next[prefix] += 1
        ann_id = f"{prefix}{self.next[prefix]}"
        self.claimed.add(ann_id)
        return ann_id


def doc_to_brat(doc: Doc, doc_id: Optional[str] = None) -> BratDocument:
    """The brat document of a Doc (entities, relations, and ``doc._.brat`` extras)."""
    info = doc._.brat or {}
    records = info.get("entities", [])
    raw_relations = info.get("relations", [])
    events = [event_from_dict(e) for e in info.get("events", [])]
    out = BratDocument(text=doc.text, doc_id=doc_id or info.get("doc_id", ""))
    ids = AnnotationIds([r["id"] for r in records] + [r["id"] for r in raw_relations] + [e.id for e in events])

    pool: Dict[Key, List[Dict[str, Any]]] = defaultdict(list)
    for rec in records:
        if rec.get("aligned", True):
            pool[(rec["start"], rec["end"], rec["label"])].append(rec)
    key_to_id: Dict[Key, str] = {}
    id_to_key: Dict[str, Key] = {}

    def add_entity(key: Key, rec: Optional[Dict[str, Any]]) -> None:
        frags = [(int(s), int(e)) for s, e in rec["fragments"]] if rec else [(key[0], key[1])]
        ent_id = ids.claim(rec["id"]) if rec else ids.new("T")
        out.entities.append(Entity(ent_id, key[2], frags))
        key_to_id.setdefault(key, ent_id)
        id_to_key[ent_id] = key

    spans = doc.spans[ENTITY_SPANS_KEY] if ENTITY_SPANS_KEY in doc.spans else doc.ents
    for span in spans:
        key = (span.start_char, span.end_char, span.label_)
        add_entity(key, pool[key].pop(0) if pool.get(key) else None)
    for rec in records:
        if not rec.get("aligned", True):
            add_entity((rec["start"], rec["end"], rec["label"]), rec)

    triggers = {e.id: e.trigger for e in events}

    def resolve(ann_id: str) -> Optional[Key]:
        seen = set()
        while ann_id not in id_to_key and ann_id in triggers and ann_id not in seen:
            seen.add(ann_id)
            ann_id = triggers[ann_id]
        return id_to_key.get(ann_id)

    raw_by_id = {r["id"]: r for r in raw_relations}
    written = set()
    for rel in get_relations(doc):
        key1, key2 = (tuple(rel["arg1"]), tuple(rel["arg2"]))
        raw = raw_by_id.get(rel.get("id"))
        if (
            raw is not None
            and raw["id"] not in written
            and raw["type"] == rel["label"]
            and resolve(raw["arg1"]) == key1
            and resolve(raw["arg2"]) == key2
        ):
            out.relations.append(Relation(raw["id"], raw["type"], raw["arg1"], raw["arg2"], raw["role1"], raw["role2"]))
            written.add(ids.claim(raw["id"]))
            continue
        for key in (key1, key2):
            if key not in key_to_id:  # an argument that is no entity of the doc: write it as one
                add_entity(key, None)  # type: ignore[arg-type]
        rel_id = ids.take(rel.get("id"), "R")
        out.relations.append(Relation(rel_id, rel["label"], key_to_id[key1], key_to_id[key2]))  # type: ignore
    for raw in raw_relations:
        if not raw.get("resolved", True) and raw["id"] not in written:
            out.relations.append(Relation(raw["id"], raw["type"], raw["arg1"], raw["arg2"], raw["role1"], raw["role2"]))
    _restore_order(out.entities, [r["id"] for r in records])
    _restore_order(out.relations, [r["id"] for r in raw_relations])
    out.events = events
    out.attributes = [attribute_from_dict(a) for a in info.get("attributes", [])]
    out.notes = [note_from_dict(n) for n in info.get("notes", [])]
    out.equivalences = [equivalence_from_dict(q) for q in info.get("equivalences", [])]
    out.other = list(info.get("other", []))
    return out


def _restore_order(annotations: List[Any], original_ids: List[str]) -> None:
    """Sort in place: annotations read from a file in file order, new ones after them."""
    rank = {ann_id: i for i, ann_id in reversed(list(enumerate(original_ids)))}
    annotations.sort(key=lambda ann: rank.get(ann.id, len(rank)))


def docs_to_brat_dir(docs: Iterable[Doc], out_dir: Union[str, Path], schema: Optional[Schema] = None) -> List[Path]:
    """Write Docs as ``NAME.txt`` + ``NAME.ann`` (NAME from ``doc._.brat``, else ``doc00001``;
    an id that is not a safe relative file name gets :func:`~spacy_softprompt.safe_io.hashed_name`,
    so nothing is written outside ``out_dir``). With ``schema``, the annotations are written
    in the corpus's source form (:func:`~.source_form.to_source_form`)."""
    from ..safe_io import hashed_name, is_plain_name
    from .source_form import to_source_form

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: List[Path] = []
    taken: set = set()
    for i, doc in enumerate(docs, start=1):
        brat_doc = doc_to_brat(doc)
        if schema is not None:
            brat_doc = to_source_form(brat_doc, schema)
        name = brat_doc.doc_id or f"doc{i:05d}"
        if not is_plain_name(name):
            name = hashed_name(name)
        base, n = name, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name.lower())
        paths.append(write_brat_document(brat_doc, out_dir, name))
    return paths


write = docs_to_brat_dir
