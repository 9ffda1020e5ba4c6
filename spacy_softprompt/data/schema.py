"""Task schemas: which brat entity and relation types a task keeps, and what they become.

A schema is a JSON file (shipped ones live in ``spacy_softprompt/schemas/``,
also reachable as ``configs/schemas/``)::

    {
      "name": "maccrobat_medication",
      "description": "free text",
      "corpus": "free text (source, licence)",
      "entities": {                      # source type -> target label; unlisted types are dropped
        "Medication": "Medication",
        "Administration": "Route",
        "StatusTime": {                  # or: the label follows an attribute's value
          "attribute": "StatusTimeVal",
          "values": {"current": "StatusTime_current", "past": "StatusTime_past"}
        }
      },
      "relations": {                     # target label -> definition
        "Route-Drug": {
          "pairs": [["Route", "Medication"]],   # allowed (arg1, arg2) in TARGET labels
          "rules": [                            # how source annotations become this label
            {"relation": "MODIFY", "arg1": ["Administration"], "arg2": ["Medication"]}
          ]
        },
        "ADE-Drug": {
          "rules": [{"relation": "CAUSE", "arg1": ["Medication"],
                     "arg2": ["Sign_symptom", "Disease_disorder"], "swap": true}]
        },
        "Severity-AdverseReaction": {
          "rules": [{"event": "AdverseReaction", "role": "Effect",
                     "arg1": ["AdverseReaction"], "arg2": ["Severity"], "swap": true}]
        }
      },
      "questions": {                     # free MRC hard prompts per target label
        "entities": {"Route": "Which routes of administration are mentioned?"},
        "relations": {"Route-Drug": {"question": "...", "template": "By which route is {arg2} given?"}}
      }
    }

Valued entities
  An ``entities`` entry that is an object takes its target label from the
  value of one brat attribute (``A`` line) on the entity: ``values`` maps each
  value to a label (e.g. n2c2 2022 SDoH: ``StatusTime`` with
  ``StatusTimeVal current`` becomes ``StatusTime_current``). An entity of that
  type without the attribute, with a value not in ``values`` or with two
  different values is dropped and listed in
  :attr:`MappedDocument.entities_unvalued` with the reason (conversion
  reports each one with its file and line).
Rules
  ``relation`` matches brat ``R`` lines of that type: source arg1/arg2 are the
  ``Arg1``/``Arg2`` of the line. ``event`` (with ``role``) matches each
  argument of an event of that type whose role is ``role`` or a numbered
  repeat of it (``Effect2``): source arg1 is the event's trigger, source arg2
  the argument. Arguments naming an event (``E12``) are followed to its
  trigger entity. ``arg1``/``arg2`` (optional) restrict the SOURCE entity types
  (each must be a key of ``entities``); ``swap`` exchanges the arguments so
  that the target order follows the task's convention (e.g. n2c2: arg1 the
  attribute, arg2 the drug). ``rules`` defaults to the identity rule
  ``[{"relation": LABEL}]``. The first matching rule (in file order) wins.
``pairs``
  The (arg1, arg2) target-label pairs a relation may join; a mapped relation
  outside them is dropped. The relation component builds candidates from them.
  When absent they are derived from the rules (which then need ``arg1`` and
  ``arg2``); rules may not produce a pair outside explicit ``pairs``.
``questions``
  Free-form: per target label a string or an object (``question`` is the key
  :meth:`Schema.question` reads; ``template`` may hold a per-argument query
  with ``{arg1}``/``{arg2}`` placeholders). Labels must exist in the schema.

Unknown keys, types referenced by rules but missing from ``entities``, and
labels unknown to the schema raise :class:`~.errors.BratError`. ``None``
instead of a schema means "keep everything": all entity types as they are and
every ``R`` line as a relation.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from .brat import BratDocument, Entity, base_role, resolve_entity_id
from .errors import BratError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

_TOP_KEYS = {"name", "description", "corpus", "entities", "relations", "questions"}
_RELATION_KEYS = {"pairs", "rules", "description"}
_RULE_KEYS = {"relation", "event", "role", "arg1", "arg2", "swap"}
_QUESTION_KEYS = {"entities", "relations"}

Pair = Tuple[str, str]


@dataclass(frozen=True)
class RelationRule:
    """One way a source annotation becomes a target relation."""

    label: str
    relation: Optional[str] = None
    event: Optional[str] = None
    role: Optional[str] = None
    arg1: Optional[FrozenSet[str]] = None
    arg2: Optional[FrozenSet[str]] = None
    swap: bool = False

    def accepts(self, type1: str, type2: str) -> bool:
        return (self.arg1 is None or type1 in self.arg1) and (self.arg2 is None or type2 in self.arg2)


@dataclass
class MappedRelation:
    """A relation after schema mapping: label and the two argument entities (target order)."""

    label: str
    arg1: Entity
    arg2: Entity
    id: Optional[str] = None
    source: str = ""


@dataclass
class MappedDocument:
    """What a schema keeps of a brat document, plus counts of what it drops."""

    entities: List[Tuple[Entity, str]] = field(default_factory=list)
    relations: List[MappedRelation] = field(default_factory=list)
    entities_dropped: int = 0
    relations_dropped: int = 0
    relations_unresolved: int = 0
    entities_unvalued: List[Tuple[Entity, str]] = field(default_factory=list)  # (entity, why), in entities_dropped


@dataclass(frozen=True)
class ValuedType:
    """A source entity type whose target label follows the value of one attribute."""

    attribute: str
    values: Dict[str, str]  # attribute value -> target label


@dataclass
class Schema:
    """A validated task schema (see the module docstring for the JSON format)."""

    name: str
    entities: Dict[str, str]
    pairs: Dict[str, List[Pair]]
    rules: List[RelationRule]
    questions: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    corpus: str = ""
    path: Optional[str] = None
    valued: Dict[str, ValuedType] = field(default_factory=dict)  # source type -> its attribute and labels
    source_order: List[str] = field(default_factory=list)  # source types as the file lists them

    @property
    def source_types(self) -> List[str]:
        """Every source entity type the schema keeps (plain and valued), in file order."""
        known = list(self.entities) + [t for t in self.valued if t not in self.entities]
        return [t for t in self.source_order if t in known] or known

    @property
    def entity_labels(self) -> List[str]:
        """Target entity labels, in first-seen order."""
        return list(dict.fromkeys(label for source in self.source_types for label in self.targets_of(source)))

    @property
    def relation_labels(self) -> List[str]:
        return list(self.pairs)

    def targets_of(self, source_type: str) -> List[str]:
        """The target labels a source entity type can become (empty: dropped)."""
        if source_type in self.valued:
            return list(dict.fromkeys(self.valued[source_type].values.values()))
        return [self.entities[source_type]] if source_type in self.entities else []

    def entity_label(self, source_type: str, value: Optional[str] = None) -> Optional[str]:
        """The target label of a source entity type (None: dropped); a valued type
        needs the value of its attribute."""
        if source_type in self.valued:
            return self.valued[source_type].values.get(value) if value is not None else None
        return self.entities.get(source_type)

    def question(self, kind: str, label: str) -> Optional[str]:
        """The natural-language question for an entity or relation label, if any."""
        value = self.questions.get(kind, {}).get(label)
        if isinstance(value, dict):
            value = value.get("question")
        return value if isinstance(value, str) else None

    def match_relation(self, rel_type: str, type1: str, type2: str) -> Optional[RelationRule]:
        for rule in self.rules:
            if rule.relation == rel_type and rule.accepts(type1, type2):
                return rule
        return None

    def match_event_arg(self, event_type: str, role: str, type1: str, type2: str) -> Optional[RelationRule]:
        role = base_role(role)
        for rule in self.rules:
            if rule.event == event_type and rule.role == role and rule.accepts(type1, type2):
                return rule
        return None

    def to_dict(self) -> Dict[str, Any]:
        """The schema as JSON data (explicit pairs and rules)."""
        relations: Dict[str, Any] = {}
        for label, pairs in self.pairs.items():
            rules = []
            for rule in self.rules:
                if rule.label != label:
                    continue
                out: Dict[str, Any] = {}
                if rule.relation is not None:
                    out["relation"] = rule.relation
                else:
                    out["event"], out["role"] = rule.event, rule.role
                if rule.arg1 is not None:
                    out["arg1"] = sorted(rule.arg1)
                if rule.arg2 is not None:
                    out["arg2"] = sorted(rule.arg2)
                if rule.swap:
                    out["swap"] = True
                rules.append(out)
            relations[label] = {"pairs": [list(p) for p in pairs], "rules": rules}
        entities: Dict[str, Any] = {}
        for source in self.source_types:
            valued = self.valued.get(source)
            entities[source] = (
                {"attribute": valued.attribute, "values": dict(valued.values)} if valued else self.entities[source]
            )
        return {
            "name": self.name,
            "description": self.description,
            "corpus": self.corpus,
            "entities": entities,
            "relations": relations,
            "questions": self.questions,
        }


# --- loading and validation ------------------------------------------------------------------


def available_schemas() -> List[str]:
    """Names of the shipped schemas."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


def load_schema(name_or_path: Union[None, str, Path, "Schema"]) -> Optional[Schema]:
    """A shipped schema by name (``"ddi2013"``), or a JSON file; None stays None."""
    if name_or_path is None or isinstance(name_or_path, Schema):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        shipped = SCHEMA_DIR / f"{text}.json"
        if path.suffix == "" and shipped.is_file():
            path = shipped
        else:
            raise BratError(
                f"no schema file {text!r} and no shipped schema of that name "
                f"(shipped: {', '.join(available_schemas())})"
            )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BratError(f"{path}: not valid JSON: {err}") from None
    return schema_from_dict(data, path=str(path))


def schema_from_dict(data: Any, path: Optional[str] = None) -> Schema:
    """Validate schema JSON data and build a :class:`Schema`."""
    where = path or "<schema>"

    def fail(message: str) -> BratError:
        return BratError(f"{where}: {message}")

    if not isinstance(data, dict):
        raise fail("a schema is a JSON object")
    _check_keys(data, _TOP_KEYS, "top level", fail)
    raw_entities = data.get("entities")
    if not isinstance(raw_entities, dict) or not raw_entities:
        raise fail("'entities' must be a non-empty object mapping source type -> target label")
    entities: Dict[str, str] = {}
    valued: Dict[str, ValuedType] = {}
    for src, tgt in raw_entities.items():
        if isinstance(tgt, dict) and src:
            valued[src] = _parse_valued(src, tgt, fail)
        elif not isinstance(tgt, str) or not tgt or not src:
            raise fail(f"'entities': {src!r} must map to a non-empty label string or an attribute object")
        else:
            entities[src] = tgt
    targets_of: Dict[str, List[str]] = {src: [tgt] for src, tgt in entities.items()}
    targets_of.update({src: list(v.values.values()) for src, v in valued.items()})
    targets = {label for labels in targets_of.values() for label in labels}

    relations = data.get("relations", {})
    if not isinstance(relations, dict):
        raise fail("'relations' must be an object mapping target label -> definition")
    pairs: Dict[str, List[Pair]] = {}
    rules: List[RelationRule] = []
    for label, spec in relations.items():
        if not isinstance(spec, dict):
            raise fail(f"relation {label!r}: definition must be an object")
        _check_keys(spec, _RELATION_KEYS, f"relation {label!r}", fail)
        raw_rules = spec.get("rules", [{"relation": label}])
        if not isinstance(raw_rules, list) or not raw_rules:
            raise fail(f"relation {label!r}: 'rules' must be a non-empty list")
        label_rules = [_parse_rule(label, i, r, targets_of, fail) for i, r in enumerate(raw_rules, start=1)]
        derived = _derived_pairs(label_rules, targets_of)
        if "pairs" in spec:
            explicit = _parse_pairs(label, spec["pairs"], targets, fail)
            for i, rule in enumerate(label_rules, start=1):
                if rule.arg1 is None or rule.arg2 is None:
                    continue
                extra = [p for p in _derived_pairs([rule], targets_of) or [] if p not in explicit]
                if extra:
                    raise fail(f"relation {label!r}: rule {i} produces pairs {extra} that 'pairs' does not allow")
            pairs[label] = explicit
        elif derived is None:
            raise fail(f"relation {label!r}: give 'pairs' or 'arg1' and 'arg2' in every rule")
        else:
            pairs[label] = derived
        rules.extend(label_rules)

    questions = data.get("questions", {})
    if not isinstance(questions, dict):
        raise fail("'questions' must be an object")
    _check_keys(questions, _QUESTION_KEYS, "questions", fail)
    for kind, known in (("entities", targets), ("relations", set(pairs))):
        block = questions.get(kind, {})
        if not isinstance(block, dict):
            raise fail(f"'questions.{kind}' must be an object")
        unknown = sorted(set(block) - known)
        if unknown:
            raise fail(f"'questions.{kind}' names labels not in the schema: {unknown}")
    return Schema(
        name=str(data.get("name") or (Path(path).stem if path else "schema")),
        entities=entities,
        pairs=pairs,
        rules=rules,
        questions=questions,
        description=str(data.get("description", "")),
        corpus=str(data.get("corpus", "")),
        path=path,
        valued=valued,
        source_order=list(raw_entities),
    )


def _parse_valued(source: str, raw: Dict[str, Any], fail: Any) -> ValuedType:
    where = f"'entities': {source!r}"
    _check_keys(raw, {"attribute", "values"}, where, fail)
    attribute, values = raw.get("attribute"), raw.get("values")
    if not isinstance(attribute, str) or not attribute:
        raise fail(f"{where}: 'attribute' must name the brat attribute whose value gives the label")
    if not isinstance(values, dict) or not values:
        raise fail(f"{where}: 'values' must be a non-empty object mapping attribute value -> target label")
    for value, label in values.items():
        if not isinstance(label, str) or not label:
            raise fail(f"{where}: value {value!r} must map to a non-empty label string")
    return ValuedType(attribute=attribute, values=dict(values))


def _check_keys(obj: Dict[str, Any], allowed: set, where: str, fail: Any) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise fail(f"unknown key(s) in {where}: {unknown} (allowed: {sorted(allowed)})")


def _parse_rule(label: str, i: int, raw: Any, entities: Dict[str, List[str]], fail: Any) -> RelationRule:
    where = f"relation {label!r} rule {i}"
    if not isinstance(raw, dict):
        raise fail(f"{where}: a rule is an object")
    _check_keys(raw, _RULE_KEYS, where, fail)
    if ("relation" in raw) == ("event" in raw):
        raise fail(f"{where}: give exactly one of 'relation' or 'event'")
    if "event" in raw and not isinstance(raw.get("role"), str):
        raise fail(f"{where}: an 'event' rule needs a 'role'")
    if "relation" in raw and "role" in raw:
        raise fail(f"{where}: 'role' only goes with 'event'")
    args = []
    for key in ("arg1", "arg2"):
        value = raw.get(key)
        if value is None:
            args.append(None)
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise fail(f"{where}: '{key}' must be a non-empty list of source entity types")
        missing = [v for v in value if v not in entities]
        if missing:
            raise fail(f"{where}: '{key}' names source type(s) {missing} that are not in 'entities'")
        args.append(frozenset(value))
    if not isinstance(raw.get("swap", False), bool):
        raise fail(f"{where}: 'swap' must be true or false")
    return RelationRule(
        label=label,
        relation=raw.get("relation"),
        event=raw.get("event"),
        role=raw.get("role"),
        arg1=args[0],
        arg2=args[1],
        swap=raw.get("swap", False),
    )


def _parse_pairs(label: str, raw: Any, targets: set, fail: Any) -> List[Pair]:
    if not isinstance(raw, list) or not raw:
        raise fail(f"relation {label!r}: 'pairs' must be a non-empty list of [arg1, arg2]")
    pairs: List[Pair] = []
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise fail(f"relation {label!r}: bad pair {pair!r} (expected [arg1_label, arg2_label])")
        missing = [p for p in pair if p not in targets]
        if missing:
            raise fail(f"relation {label!r}: pair {pair} names label(s) {missing} that no entity maps to")
        if tuple(pair) not in pairs:
            pairs.append((pair[0], pair[1]))
    return pairs


def _derived_pairs(rules: Sequence[RelationRule], targets_of: Dict[str, List[str]]) -> Optional[List[Pair]]:
    pairs: List[Pair] = []
    for rule in rules:
        if rule.arg1 is None or rule.arg2 is None:
            return None
        for t1 in sorted(rule.arg1):
            for t2 in sorted(rule.arg2):
                for a in targets_of[t1]:
                    for b in targets_of[t2]:
                        pair = (b, a) if rule.swap else (a, b)
                        if pair not in pairs:
                            pairs.append(pair)
    return pairs


# --- applying -----------------------------------------------------------------------------------


def apply_schema(doc: BratDocument, schema: Optional[Schema]) -> MappedDocument:
    """Entities and relations a schema keeps (``None``: every entity and ``R`` line).

    Relation and event arguments naming an event are followed to its trigger.
    """
    out = MappedDocument()
    entities = doc.entity_map()
    labels: Dict[str, str] = {}
    values = _attribute_values(doc) if schema is not None and schema.valued else {}
    for ent in doc.entities:
        if schema is not None and ent.type in schema.valued:
            label, why = _valued_label(schema, ent, values.get(ent.id, {}))
            if label is None:
                out.entities_dropped += 1
                out.entities_unvalued.append((ent, why))
                continue
        else:
            label = ent.type if schema is None else schema.entity_label(ent.type)
        if label is None:
            out.entities_dropped += 1
            continue
        out.entities.append((ent, label))
        labels.setdefault(ent.id, label)

    def entity_of(ann_id: str) -> Optional[Entity]:
        resolved = resolve_entity_id(doc, ann_id)
        return entities.get(resolved) if resolved is not None else None

    for rel in doc.relations:
        e1, e2 = entity_of(rel.arg1), entity_of(rel.arg2)
        if e1 is None or e2 is None:
            out.relations_unresolved += 1
            continue
        if schema is None:
            out.relations.append(MappedRelation(rel.type, e1, e2, rel.id, source=rel.id))
            continue
        rule = schema.match_relation(rel.type, e1.type, e2.type)
        _add_mapped(out, schema, labels, rule, e1, e2, rel.id, rel.id)
    if schema is None:
        return out
    event_types = {rule.event for rule in schema.rules if rule.event is not None}
    for ev in doc.events:
        if ev.type not in event_types:
            continue  # events of this type are not relations in this schema
        trigger = entities.get(ev.trigger)
        for role, ref in ev.args:
            arg = entity_of(ref)
            if trigger is None or arg is None:
                out.relations_unresolved += 1
                continue
            rule = schema.match_event_arg(ev.type, role, trigger.type, arg.type)
            _add_mapped(out, schema, labels, rule, trigger, arg, None, f"{ev.id}:{role}")
    return out


def _attribute_values(doc: BratDocument) -> Dict[str, Dict[str, List[Optional[str]]]]:
    """entity id -> attribute name -> the values given to it (``None`` for a binary attribute)."""
    values: Dict[str, Dict[str, List[Optional[str]]]] = {}
    for att in doc.attributes:
        values.setdefault(att.target, {}).setdefault(att.name, []).append(att.value)
    return values


def _valued_label(schema: Schema, ent: Entity, given: Dict[str, List[Optional[str]]]) -> Tuple[Optional[str], str]:
    """(target label, "") of a valued entity, or (None, why it has none)."""
    valued = schema.valued[ent.type]
    found = list(dict.fromkeys(given.get(valued.attribute, [])))
    if not found:
        return None, f"{ent.type} entity has no {valued.attribute} attribute (the schema labels it by that value)"
    if len(found) > 1:
        return None, f"{ent.type} entity has {len(found)} different {valued.attribute} values: {sorted(map(str, found))}"
    label = schema.entity_label(ent.type, found[0])
    if label is None:
        known = ", ".join(sorted(valued.values))
        return None, f"{valued.attribute} value {found[0]!r} is not in the schema ({known})"
    return label, ""


def _add_mapped(
    out: MappedDocument,
    schema: Schema,
    labels: Dict[str, str],
    rule: Optional[RelationRule],
    e1: Entity,
    e2: Entity,
    rel_id: Optional[str],
    source: str,
) -> None:
    if rule is None or e1.id not in labels or e2.id not in labels:
        out.relations_dropped += 1
        return
    if rule.swap:
        e1, e2 = e2, e1
    if (labels[e1.id], labels[e2.id]) not in schema.pairs[rule.label]:
        out.relations_dropped += 1
        return
    out.relations.append(MappedRelation(rule.label, e1, e2, rel_id, source=source))


def mapped_annotations(
    doc: BratDocument, schema: Optional[Schema] = None, accept_target_labels: bool = False
) -> Tuple[List[Tuple[int, int, str]], List[Tuple[str, Tuple[int, int, str], Tuple[int, int, str]]]]:
    """``(entities, relations)`` of a brat document after mapping, as plain items:
    entities ``(start, end, label)``, relations ``(label, arg1, arg2)`` (file offsets,
    no tokenization; e.g. for scoring brat against brat).

    With ``accept_target_labels`` (a folder written by a pipeline, already in the
    schema's labels), entities whose type is a target label and ``R`` lines whose
    type is a target relation label joining an allowed pair are kept as they are.
    """
    mapped = apply_schema(doc, schema)
    labels = {ent.id: label for ent, label in mapped.entities}
    entities = [(e.start, e.end, label) for e, label in mapped.entities]
    relations = [
        (r.label, (r.arg1.start, r.arg1.end, labels[r.arg1.id]), (r.arg2.start, r.arg2.end, labels[r.arg2.id]))
        for r in mapped.relations
    ]
    if schema is None or not accept_target_labels:
        return entities, relations
    targets = set(schema.entity_labels)
    direct = apply_schema(doc, None)
    for ent, _ in direct.entities:
        if ent.type not in schema.source_types and ent.type in targets:
            labels.setdefault(ent.id, ent.type)
            entities.append((ent.start, ent.end, ent.type))
    for rel in direct.relations:
        pair = (labels.get(rel.arg1.id), labels.get(rel.arg2.id))
        if pair in schema.pairs.get(rel.label, []):
            relations.append((rel.label, (rel.arg1.start, rel.arg1.end, pair[0]), (rel.arg2.start, rel.arg2.end, pair[1])))
    return entities, relations
