"""How entities and relations live on a spaCy ``Doc``.

* ``doc.spans[ENTITY_SPANS_KEY]``: every entity (overlapping and nested allowed).
  A discontinuous entity is stored as the span covering its fragments; the
  fragments themselves are kept in ``doc._.brat["fragments"]``.
* ``doc.ents``: a non-overlapping view of the same entities (longest first).
* ``doc._.relations``: a list of plain dicts (msgpack-safe, so it survives
  ``DocBin`` and ``nlp.pipe(n_process=...)``)::

      {"label": "Dosage-Drug",
       "arg1": [start_char, end_char, "Dosage"],
       "arg2": [start_char, end_char, "Drug"],
       "id": "R3"}            # optional: brat id when read from a file

  Arguments are (start_char, end_char, label) triples of entities, so
  relations do not depend on tokenization and score directly.
* ``doc._.brat``: what brat has that spaCy has not (fragments of discontinuous
  entities, entity ids, events, attributes, notes, equivalences, unmapped
  lines), used for a lossless round trip. Plain JSON-like data.
"""
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span
from spacy.util import filter_spans

ENTITY_SPANS_KEY = "entities"

#: an entity as ``(start, end, label)``: characters for gold keys, tokens elsewhere
EntityKey = Tuple[int, int, str]
Relation = Dict[str, Any]


def register_extensions() -> None:
    """Register the Doc extensions (idempotent)."""
    if not Doc.has_extension("relations"):
        Doc.set_extension("relations", default=None)
    if not Doc.has_extension("brat"):
        Doc.set_extension("brat", default=None)


register_extensions()


def make_relation(
    label: str,
    arg1: Sequence[Any],
    arg2: Sequence[Any],
    relation_id: Optional[str] = None,
    score: Optional[float] = None,
) -> Relation:
    """Build a relation dict from two entities (Spans or (start, end, label))."""
    rel: Relation = {"label": label, "arg1": _as_key(arg1), "arg2": _as_key(arg2)}
    if relation_id is not None:
        rel["id"] = relation_id
    if score is not None:
        rel["score"] = float(score)
    return rel


def _as_key(arg: Any) -> List[Any]:
    if isinstance(arg, Span):
        return [arg.start_char, arg.end_char, arg.label_]
    start, end, label = arg
    return [int(start), int(end), str(label)]


def get_relations(doc: Doc) -> List[Relation]:
    """The relations of a doc (an empty list when none were set), with arguments
    as lists (msgpack may hand them back as tuples after ``DocBin``)."""
    return [
        {**rel, "arg1": list(rel["arg1"]), "arg2": list(rel["arg2"])}
        for rel in (doc._.relations or [])
    ]


def get_entities(doc: Doc, spans_key: str = ENTITY_SPANS_KEY) -> List[Span]:
    """All entities: the span group when present, else ``doc.ents``."""
    if spans_key in doc.spans:
        return list(doc.spans[spans_key])
    return list(doc.ents)


def set_entities(doc: Doc, spans: Iterable[Span], spans_key: str = ENTITY_SPANS_KEY) -> None:
    """Store all entities in the span group and a non-overlapping view in ``doc.ents``."""
    spans = sorted(spans, key=lambda s: (s.start_char, s.end_char, s.label_))
    doc.spans[spans_key] = spans
    doc.ents = filter_spans(spans)


def relation_view(doc: Doc) -> List[str]:
    """Human-readable relation lines, e.g. ``'Dosage-Drug: "10 mg" -> "aspirin"'``."""
    lines = []
    for rel in get_relations(doc):
        (s1, e1, _), (s2, e2, _) = rel["arg1"], rel["arg2"]
        lines.append(f'{rel["label"]}: "{doc.text[s1:e1]}" -> "{doc.text[s2:e2]}"')
    return lines
