"""A schema's mapping run backwards: brat in a task's target labels (what a
pipeline writes) rewritten into the corpus's own annotation form.

Each entity label goes back to the first source type that maps to it; a label
of a valued type (``StatusTime_current``) becomes its type plus an attribute
line (``A1 StatusTimeVal T2 current``). Each relation goes back through the
first rule of its label whose source types fit its arguments: a ``relation``
rule gives an ``R`` line of the source type, an ``event`` rule an argument of
the trigger's event (``E1 Tobacco:T1 Status:T2 Amount:T3``; a repeated role is
numbered, ``Status2``). Every entity of an event type gets its event, with or
without arguments. Labels and relations the schema cannot map back are written
unchanged, so nothing is lost; existing events, attributes, notes and
equivalences are kept.
"""
from dataclasses import replace
from typing import Dict, Optional, Tuple

from .brat import Attribute, BratDocument, Event, Relation, base_role
from .docs import AnnotationIds
from .schema import RelationRule, Schema

SourceForm = Tuple[str, Optional[str], Optional[str]]  # (source type, attribute, value)


def label_sources(schema: Schema) -> Dict[str, SourceForm]:
    """target entity label -> (source type, attribute, value); the first source type wins."""
    sources: Dict[str, SourceForm] = {}
    for source in schema.source_types:
        valued = schema.valued.get(source)
        if valued is None:
            sources.setdefault(schema.entities[source], (source, None, None))
        else:
            for value, label in valued.values.items():
                sources.setdefault(label, (source, valued.attribute, value))
    return sources


def source_rule(schema: Schema, label: str, type1: Optional[str], type2: Optional[str]) -> Optional[RelationRule]:
    """The first rule of relation ``label`` that could have produced a relation
    between entities of source types ``type1`` -> ``type2`` (target order)."""
    if type1 is None or type2 is None:
        return None
    for rule in schema.rules:
        if rule.label != label:
            continue
        first, second = (type2, type1) if rule.swap else (type1, type2)
        if rule.event is not None and first != rule.event:
            continue  # an event's trigger has the event's type
        if rule.accepts(first, second):
            return rule
    return None


def to_source_form(doc: BratDocument, schema: Schema) -> BratDocument:
    """``doc`` (entities and ``R`` lines in ``schema``'s target labels) in the source form."""
    sources = label_sources(schema)
    ids = AnnotationIds([a.id for group in (doc.entities, doc.relations, doc.events, doc.attributes) for a in group])
    out = replace(
        doc, entities=[], relations=[], events=[replace(ev, args=list(ev.args)) for ev in doc.events], attributes=list(doc.attributes)
    )
    types: Dict[str, str] = {}
    for ent in doc.entities:
        source, attribute, value = sources.get(ent.type, (ent.type, None, None))
        out.entities.append(replace(ent, type=source))
        types[ent.id] = source
        if attribute is not None:
            out.attributes.append(Attribute(ids.new("A"), attribute, ent.id, value))
    event_types = {rule.event for rule in schema.rules if rule.event is not None}
    has_event = {ev.trigger for ev in doc.events}
    events: Dict[str, Event] = {}
    for ent in out.entities:
        if types[ent.id] in event_types and ent.id not in has_event:
            events[ent.id] = Event(ids.new("E"), types[ent.id], ent.id, [])
            out.events.append(events[ent.id])
    for rel in doc.relations:
        rule = source_rule(schema, rel.type, types.get(rel.arg1), types.get(rel.arg2))
        if rule is None:
            out.relations.append(rel)  # not the schema's: kept as it is
            continue
        first, second = (rel.arg2, rel.arg1) if rule.swap else (rel.arg1, rel.arg2)
        if rule.relation is not None:
            out.relations.append(Relation(rel.id, rule.relation, first, second))
            continue
        event = events.get(first)
        if event is None:  # the trigger's event came with the document
            event = next((ev for ev in out.events if ev.trigger == first), None)
        if event is None:
            out.relations.append(rel)
            continue
        taken = sum(1 for role, _ in event.args if base_role(role) == rule.role)
        event.args.append((f"{rule.role}{taken + 1}" if taken else str(rule.role), second))
    return out
