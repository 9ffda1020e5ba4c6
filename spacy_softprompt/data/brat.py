"""brat standoff in pure Python: a document model, a validating parser, a writer.

No spaCy here. A :class:`BratDocument` holds the text and every annotation of
one ``NAME.txt`` + ``NAME.ann`` pair:

=====  ==========================================  =====================
line   example                                     model
=====  ==========================================  =====================
``T``  ``T4\tAdverseReaction 10 15;22 30\tjoint …``  :class:`Entity`
``R``  ``R1\tMODIFY Arg1:T6 Arg2:E3``                :class:`Relation`
``E``  ``E68\tAdverseReaction:T68 Effect:E69``       :class:`Event`
``A``  ``A2\tUMLS-Preferred-Name E1 Hypertensive…``  :class:`Attribute`
``#``  ``#1\tAnnotatorNotes E12\tLangerhans …``      :class:`Note`
``*``  ``*\tOR T1 T2``                               :class:`Equivalence`
other  anything else (``N`` lines, bad lines)        kept verbatim
=====  ==========================================  =====================

Offsets are character offsets into the text as stored (read as UTF-8 with
``newline=''``, so a CRLF counts two characters). Problems (malformed lines,
offsets past the end, span text that disagrees with the file, arguments naming
a missing id, duplicate ids, undecodable bytes, unpaired files) are reported
through an :class:`~.errors.IssueCollector`; a malformed or duplicate line is
kept verbatim so that writing the document back loses nothing.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import BratError, IssueCollector, shorten

Fragment = Tuple[int, int]
PathLike = Union[str, Path]

_ID_RE = re.compile(r"^[TREAMN#][^\s]*$")
_OFFSETS_RE = re.compile(r"^\d+ \d+(?:;\d+ \d+)*$")
_ARG_RE = re.compile(r"^([^:\s]+):([^:\s]+)$")
_ROLE_NUMBER_RE = re.compile(r"\d+$")


@dataclass
class Entity:
    """A text-bound annotation; several fragments when discontinuous."""

    id: str
    type: str
    fragments: List[Fragment]
    text: str = field(default="", compare=False)  # as stored; derived data, not compared
    line: int = field(default=0, compare=False)

    @property
    def start(self) -> int:
        return min(s for s, _ in self.fragments)

    @property
    def end(self) -> int:
        return max(e for _, e in self.fragments)

    @property
    def is_discontinuous(self) -> bool:
        return len(self.fragments) > 1


@dataclass
class Relation:
    """A binary relation; argument roles (usually Arg1/Arg2) are kept."""

    id: str
    type: str
    arg1: str
    arg2: str
    role1: str = "Arg1"
    role2: str = "Arg2"
    line: int = field(default=0, compare=False)


@dataclass
class Event:
    """An event: a trigger entity and (role, id) arguments (ids of T or E)."""

    id: str
    type: str
    trigger: str
    args: List[Tuple[str, str]] = field(default_factory=list)
    line: int = field(default=0, compare=False)


@dataclass
class Attribute:
    """An attribute or modifier (``A``/``M``); ``value`` is None for binary ones."""

    id: str
    name: str
    target: str
    value: Optional[str] = None
    line: int = field(default=0, compare=False)


@dataclass
class Note:
    """An annotator note (``#``) on another annotation."""

    id: str
    type: str
    target: str
    text: str = ""
    line: int = field(default=0, compare=False)


@dataclass
class Equivalence:
    """An equivalence line (``*``): a type and two or more ids."""

    type: str
    ids: List[str]
    line: int = field(default=0, compare=False)


@dataclass
class BratDocument:
    """One brat document: the text and all its annotations."""

    text: str
    doc_id: str = ""
    entities: List[Entity] = field(default_factory=list)
    relations: List[Relation] = field(default_factory=list)
    events: List[Event] = field(default_factory=list)
    attributes: List[Attribute] = field(default_factory=list)
    notes: List[Note] = field(default_factory=list)
    equivalences: List[Equivalence] = field(default_factory=list)
    other: List[str] = field(default_factory=list)
    source: str = field(default="", compare=False)  # the .ann file read, for messages

    def index(self) -> Dict[str, Any]:
        """Annotations with an id, by id (the first one when an id repeats)."""
        found: Dict[str, Any] = {}
        for group in (self.entities, self.relations, self.events, self.attributes, self.notes):
            for ann in group:
                found.setdefault(ann.id, ann)
        return found

    def entity_map(self) -> Dict[str, Entity]:
        return {ent.id: ent for ent in reversed(self.entities)}

    def event_map(self) -> Dict[str, Event]:
        return {ev.id: ev for ev in reversed(self.events)}

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON/msgpack-safe data (no line numbers)."""
        return {
            "doc_id": self.doc_id,
            "entities": [entity_to_dict(e) for e in self.entities],
            "relations": [relation_to_dict(r) for r in self.relations],
            "events": [event_to_dict(e) for e in self.events],
            "attributes": [attribute_to_dict(a) for a in self.attributes],
            "notes": [note_to_dict(n) for n in self.notes],
            "equivalences": [equivalence_to_dict(q) for q in self.equivalences],
            "other": list(self.other),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any], text: str) -> "BratDocument":
        return cls(
            text=text,
            doc_id=data.get("doc_id", ""),
            entities=[entity_from_dict(e) for e in data.get("entities", [])],
            relations=[relation_from_dict(r) for r in data.get("relations", [])],
            events=[event_from_dict(e) for e in data.get("events", [])],
            attributes=[attribute_from_dict(a) for a in data.get("attributes", [])],
            notes=[note_from_dict(n) for n in data.get("notes", [])],
            equivalences=[equivalence_from_dict(q) for q in data.get("equivalences", [])],
            other=list(data.get("other", [])),
        )


def canonical(doc: BratDocument) -> Tuple[Any, ...]:
    """An order-free view of the annotations (ids, types, offsets, args, values; not the
    stored span texts): two documents are the same annotation iff their views are equal."""
    return (
        doc.text,
        sorted((e.id, e.type, tuple(e.fragments)) for e in doc.entities),
        sorted((r.id, r.type, r.role1, r.arg1, r.role2, r.arg2) for r in doc.relations),
        sorted((e.id, e.type, e.trigger, tuple(e.args)) for e in doc.events),
        sorted((a.id, a.name, a.target, a.value or "", a.value is None) for a in doc.attributes),
        sorted((n.id, n.type, n.target, n.text) for n in doc.notes),
        sorted((q.type, tuple(q.ids)) for q in doc.equivalences),
        sorted(doc.other),
    )


def same_annotations(a: BratDocument, b: BratDocument) -> bool:
    """Whether two documents hold the same text and annotations, in any order."""
    return canonical(a) == canonical(b)


# --- plain-data conversion (used for doc._.brat) ---------------------------------


def entity_to_dict(ent: Entity) -> Dict[str, Any]:
    return {"id": ent.id, "type": ent.type, "fragments": [[s, e] for s, e in ent.fragments], "text": ent.text}


def entity_from_dict(data: Dict[str, Any]) -> Entity:
    frags = [(int(s), int(e)) for s, e in data["fragments"]]
    return Entity(data["id"], data["type"], frags, data.get("text", ""))


def relation_to_dict(rel: Relation) -> Dict[str, Any]:
    return {"id": rel.id, "type": rel.type, "arg1": rel.arg1, "arg2": rel.arg2, "role1": rel.role1, "role2": rel.role2}


def relation_from_dict(data: Dict[str, Any]) -> Relation:
    return Relation(
        data["id"], data["type"], data["arg1"], data["arg2"], data.get("role1", "Arg1"), data.get("role2", "Arg2")
    )


def event_to_dict(ev: Event) -> Dict[str, Any]:
    return {"id": ev.id, "type": ev.type, "trigger": ev.trigger, "args": [[r, i] for r, i in ev.args]}


def event_from_dict(data: Dict[str, Any]) -> Event:
    return Event(data["id"], data["type"], data["trigger"], [(r, i) for r, i in data.get("args", [])])


def attribute_to_dict(att: Attribute) -> Dict[str, Any]:
    return {"id": att.id, "name": att.name, "target": att.target, "value": att.value}


def attribute_from_dict(data: Dict[str, Any]) -> Attribute:
    return Attribute(data["id"], data["name"], data["target"], data.get("value"))


def note_to_dict(note: Note) -> Dict[str, Any]:
    return {"id": note.id, "type": note.type, "target": note.target, "text": note.text}


def note_from_dict(data: Dict[str, Any]) -> Note:
    return Note(data["id"], data["type"], data["target"], data.get("text", ""))


def equivalence_to_dict(eq: Equivalence) -> Dict[str, Any]:
    return {"type": eq.type, "ids": list(eq.ids)}


def equivalence_from_dict(data: Dict[str, Any]) -> Equivalence:
    return Equivalence(data["type"], list(data["ids"]))


# --- helpers ------------------------------------------------------------------------


def base_role(role: str) -> str:
    """The role without brat's repetition number: ``Effect2`` -> ``Effect``."""
    stripped = _ROLE_NUMBER_RE.sub("", role)
    return stripped or role


def resolve_entity_id(doc: BratDocument, ann_id: str) -> Optional[str]:
    """The id of the entity that ``ann_id`` stands for: a T id itself, an event's trigger.

    Returns None when the id (or the trigger it leads to) does not exist.
    """
    entities = doc.entity_map()
    events = doc.event_map()
    seen = set()
    current = ann_id
    while current not in seen:
        seen.add(current)
        if current in entities:
            return current
        event = events.get(current)
        if event is None:
            return None
        current = event.trigger
    return None


def span_text(text: str, fragments: Sequence[Fragment], joiner: str = " ") -> str:
    """The text of the fragments, joined as brat joins them."""
    return joiner.join(text[s:e] for s, e in fragments)


def _collapse_ws(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _difference(stored: str, found: str) -> str:
    """A short 'stored|found' excerpt starting a little before the first difference."""
    i = next((k for k, (a, b) in enumerate(zip(stored, found)) if a != b), min(len(stored), len(found)))
    start = max(0, i - 6)
    return f"{stored[start:start + 18]}|{found[start:start + 18]}"


def span_text_matches(stored: str, text: str, fragments: Sequence[Fragment]) -> bool:
    """Whether the stored span text agrees with the file (fragments joined by ' ' or '';
    whitespace runs compare equal)."""
    for joiner in (" ", ""):
        derived = span_text(text, fragments, joiner)
        if stored == derived or _collapse_ws(stored) == _collapse_ws(derived):
            return True
    return False


# --- parsing ----------------------------------------------------------------------------


def parse_ann(
    ann: str,
    text: str,
    doc_id: str = "",
    file: str = "<string>",
    collector: Optional[IssueCollector] = None,
    strict: bool = False,
) -> BratDocument:
    """Parse the content of an ``.ann`` file against its text.

    Issues go to ``collector`` (a new one when None; ``strict`` raises on the
    first one). Each line is parsed on its own, so one bad line never loses
    the others; malformed lines and lines repeating an id are kept verbatim in
    ``doc.other``.
    """
    collector = collector if collector is not None else IssueCollector(strict=strict)
    doc = BratDocument(text=text, doc_id=doc_id, source=file)
    seen_ids: Dict[str, int] = {}
    for lineno, raw in enumerate(ann.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            continue
        ann_id = line.split("\t", 1)[0].split(" ", 1)[0]
        try:
            parsed = _parse_line(line, lineno)
        except _Malformed as err:
            collector.report(file, lineno, ann_id, f"malformed line: {err}", line, kind="malformed")
            doc.other.append(line)
            continue
        if parsed is None:
            doc.other.append(line)
            continue
        pid = getattr(parsed, "id", None)
        if pid is not None:
            if pid in seen_ids:
                collector.report(
                    file, lineno, pid, f"duplicate id (first on line {seen_ids[pid]}); line kept verbatim",
                    line, kind="duplicate_id",
                )
                doc.other.append(line)
                continue
            seen_ids[pid] = lineno
        _add(doc, parsed)
    _validate(doc, file, collector)
    return doc


class _Malformed(Exception):
    pass


def _parse_line(line: str, lineno: int) -> Any:
    head = line[0]
    if head == "*":
        return _parse_equivalence(line, lineno)
    if head == "#":
        return _parse_note(line, lineno)
    if head not in "TREAM":
        return None
    parts = line.split("\t", 2)
    ann_id = parts[0]
    if not _ID_RE.match(ann_id) or len(ann_id) < 2:
        raise _Malformed(f"bad id {ann_id!r}")
    if len(parts) < 2:
        raise _Malformed("expected a tab after the id")
    if head == "T":
        return _parse_entity(ann_id, parts, lineno)
    if len(parts) == 3 and parts[2].strip():
        raise _Malformed("unexpected third field")
    body = parts[1]
    if head == "R":
        return _parse_relation(ann_id, body, lineno)
    if head == "E":
        return _parse_event(ann_id, body, lineno)
    return _parse_attribute(ann_id, body, lineno)


def _parse_entity(ann_id: str, parts: List[str], lineno: int) -> Entity:
    type_offsets = parts[1]
    if " " not in type_offsets:
        raise _Malformed("expected 'TYPE START END'")
    etype, offsets = type_offsets.split(" ", 1)
    if not etype:
        raise _Malformed("empty type")
    if not _OFFSETS_RE.match(offsets):
        raise _Malformed(f"bad offsets {shorten(offsets)!r}")
    fragments = []
    for frag in offsets.split(";"):
        start, end = (int(x) for x in frag.split(" "))
        if end < start:
            raise _Malformed(f"fragment end before start ({start} {end})")
        fragments.append((start, end))
    return Entity(ann_id, etype, fragments, parts[2] if len(parts) == 3 else "", line=lineno)


def _parse_relation(ann_id: str, body: str, lineno: int) -> Relation:
    fields = body.split()
    if len(fields) != 3:
        raise _Malformed("expected 'TYPE ROLE1:ID ROLE2:ID'")
    (role1, arg1), (role2, arg2) = (_parse_arg(f) for f in fields[1:])
    return Relation(ann_id, fields[0], arg1, arg2, role1, role2, line=lineno)


def _parse_event(ann_id: str, body: str, lineno: int) -> Event:
    fields = body.split()
    if not fields:
        raise _Malformed("expected 'TYPE:TRIGGER [ROLE:ID ...]'")
    etype, trigger = _parse_arg(fields[0])
    return Event(ann_id, etype, trigger, [_parse_arg(f) for f in fields[1:]], line=lineno)


def _parse_attribute(ann_id: str, body: str, lineno: int) -> Attribute:
    match = re.match(r"^(\S+) (\S+)(?: (.*))?$", body)
    if not match:
        raise _Malformed("expected 'NAME TARGET [VALUE]'")
    name, target, value = match.groups()
    return Attribute(ann_id, name, target, value, line=lineno)


def _parse_note(line: str, lineno: int) -> Note:
    parts = line.split("\t", 2)
    if len(parts) < 2 or len(parts[0]) < 2:
        raise _Malformed("expected '#ID\\tTYPE TARGET\\tTEXT'")
    fields = parts[1].split()
    if len(fields) != 2:
        raise _Malformed("expected 'TYPE TARGET' after the note id")
    return Note(parts[0], fields[0], fields[1], parts[2] if len(parts) == 3 else "", line=lineno)


def _parse_equivalence(line: str, lineno: int) -> Equivalence:
    parts = line.split("\t")
    if parts[0] != "*" or len(parts) != 2:
        raise _Malformed("expected '*\\tTYPE ID ID ...'")
    fields = parts[1].split()
    if len(fields) < 3:
        raise _Malformed("an equivalence needs a type and at least two ids")
    return Equivalence(fields[0], fields[1:], line=lineno)


def _parse_arg(text: str) -> Tuple[str, str]:
    match = _ARG_RE.match(text)
    if not match:
        raise _Malformed(f"bad argument {shorten(text)!r} (expected ROLE:ID)")
    return match.group(1), match.group(2)


def _add(doc: BratDocument, ann: Any) -> None:
    group = {
        Entity: doc.entities,
        Relation: doc.relations,
        Event: doc.events,
        Attribute: doc.attributes,
        Note: doc.notes,
        Equivalence: doc.equivalences,
    }[type(ann)]
    group.append(ann)


def _validate(doc: BratDocument, file: str, collector: IssueCollector) -> None:
    ids: Dict[str, Any] = {line.split("\t", 1)[0]: None for line in doc.other}
    ids.update(doc.index())
    n = len(doc.text)
    for ent in doc.entities:
        if any(e > n for _, e in ent.fragments):
            collector.report(
                file, ent.line, ent.id, f"offsets past the end of the text ({ent.end} > {n})", ent.text, kind="offsets"
            )
        elif any(s == e for s, e in ent.fragments):
            collector.report(file, ent.line, ent.id, "empty fragment", ent.text, kind="offsets")
        elif ent.text and not span_text_matches(ent.text, doc.text, ent.fragments):
            collector.report(
                file, ent.line, ent.id, "span text disagrees with the file (file offsets kept)",
                _difference(ent.text, span_text(doc.text, ent.fragments)), kind="span_text",
            )

    def check(ann_id: str, line: int, ref: str, what: str, allowed: str) -> None:
        if ref not in ids:
            collector.report(file, line, ann_id, f"{what} names a missing id {shorten(ref)!r}", ref, kind="missing_id")
        elif ref[0] not in allowed:
            collector.report(file, line, ann_id, f"{what} {ref!r} has the wrong kind", ref, kind="missing_id")

    for rel in doc.relations:
        check(rel.id, rel.line, rel.arg1, rel.role1, "TE")
        check(rel.id, rel.line, rel.arg2, rel.role2, "TE")
    for ev in doc.events:
        check(ev.id, ev.line, ev.trigger, "trigger", "T")
        for role, ref in ev.args:
            check(ev.id, ev.line, ref, role, "TE")
    for att in doc.attributes:
        check(att.id, att.line, att.target, "target", "TRE")
    for note in doc.notes:
        check(note.id, note.line, note.target, "target", "TREAMN")
    for eq in doc.equivalences:
        for ref in eq.ids:
            check("*", eq.line, ref, "member", "TE")


# --- files ------------------------------------------------------------------------------


def decode_text(data: bytes, file: str, collector: IssueCollector) -> str:
    """Decode UTF-8; bad bytes are reported (file, byte offset) and replaced."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = 0
        pos = 0
        while True:
            try:
                data[pos:].decode("utf-8")
                break
            except UnicodeDecodeError as e:
                bad += 1
                pos += e.end
        collector.report(
            file, 0, "", f"not valid UTF-8 at byte offset {err.start} ({bad} bad sequence(s)); decoded with U+FFFD",
            repr(data[err.start : err.start + 8]), kind="encoding",
        )
        return data.decode("utf-8", errors="replace")


def read_brat_file(
    txt_path: PathLike,
    root: Optional[PathLike] = None,
    collector: Optional[IssueCollector] = None,
    strict: bool = False,
) -> BratDocument:
    """Read ``NAME.txt`` and ``NAME.ann`` (a missing ``.ann`` is reported: no annotations).

    ``doc_id`` is the path relative to ``root`` without the extension (the file
    stem when no root is given).
    """
    collector = collector if collector is not None else IssueCollector(strict=strict)
    txt_path = Path(txt_path)
    ann_path = txt_path.with_suffix(".ann")
    doc_id = (txt_path.relative_to(root).with_suffix("").as_posix()) if root is not None else txt_path.stem
    text = decode_text(txt_path.read_bytes(), str(txt_path), collector)
    if not ann_path.exists():
        collector.report(str(txt_path), 0, "", "no .ann file next to this .txt (no annotations)", kind="missing_file")
        return BratDocument(text=text, doc_id=doc_id, source=str(ann_path))
    ann = decode_text(ann_path.read_bytes(), str(ann_path), collector)
    return parse_ann(ann, text, doc_id=doc_id, file=str(ann_path), collector=collector)


def find_brat_files(
    directory: PathLike, recursive: bool = False, collector: Optional[IssueCollector] = None
) -> List[Path]:
    """The ``.txt`` files of a brat folder, sorted; ``.ann`` files without ``.txt`` are reported."""
    collector = collector if collector is not None else IssueCollector()
    directory = Path(directory)
    if not directory.is_dir():
        raise BratError(f"not a directory: {directory}")
    pattern = "**/*" if recursive else "*"
    txts = sorted(p for p in directory.glob(pattern + ".txt") if p.is_file())
    have = {p.with_suffix("") for p in txts}
    for ann in sorted(directory.glob(pattern + ".ann")):
        if ann.with_suffix("") not in have:
            collector.report(str(ann), 0, "", "no .txt file next to this .ann (skipped)", kind="missing_file")
    return txts


def iter_brat_dir(
    directory: PathLike,
    recursive: bool = False,
    collector: Optional[IssueCollector] = None,
    strict: bool = False,
) -> Iterator[BratDocument]:
    """Read every document of a brat folder, one at a time, sorted by path."""
    collector = collector if collector is not None else IssueCollector(strict=strict)
    for txt in find_brat_files(directory, recursive, collector):
        yield read_brat_file(txt, root=directory, collector=collector)


def read_brat_dir(
    directory: PathLike,
    recursive: bool = False,
    collector: Optional[IssueCollector] = None,
    strict: bool = False,
) -> List[BratDocument]:
    """All documents of a brat folder (see :func:`iter_brat_dir`)."""
    return list(iter_brat_dir(directory, recursive, collector, strict))


# --- writing -------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def entity_line(ent: Entity, text: str) -> str:
    frags = ";".join(f"{s} {e}" for s, e in ent.fragments)
    in_text = all(e <= len(text) for _, e in ent.fragments)
    covered = span_text(text, ent.fragments) if in_text else ent.text
    return f"{ent.id}\t{ent.type} {frags}\t{_one_line(covered)}"


def write_ann(doc: BratDocument) -> str:
    """The ``.ann`` content of ``doc`` (entity text derived from ``doc.text``)."""
    lines = [entity_line(ent, doc.text) for ent in doc.entities]
    for rel in doc.relations:
        lines.append(f"{rel.id}\t{rel.type} {rel.role1}:{rel.arg1} {rel.role2}:{rel.arg2}")
    for ev in doc.events:
        args = "".join(f" {role}:{ref}" for role, ref in ev.args)
        lines.append(f"{ev.id}\t{ev.type}:{ev.trigger}{args}")
    for att in doc.attributes:
        value = "" if att.value is None else f" {att.value}"
        lines.append(f"{att.id}\t{att.name} {att.target}{value}")
    for note in doc.notes:
        lines.append(f"{note.id}\t{note.type} {note.target}\t{_one_line(note.text)}")
    for eq in doc.equivalences:
        lines.append(f"*\t{eq.type} {' '.join(eq.ids)}")
    lines.extend(doc.other)
    return "".join(line + "\n" for line in lines)


def write_brat_document(doc: BratDocument, out_dir: PathLike, name: Optional[str] = None) -> Path:
    """Write ``NAME.txt`` (byte-exact, UTF-8) and ``NAME.ann``; returns the ``.txt`` path.

    ``name`` defaults to ``doc.doc_id`` and may contain sub-folders.
    """
    name = name or doc.doc_id
    if not name:
        raise BratError("the document has no doc_id: pass a name")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise BratError(f"refusing to write outside the output folder: {name!r}")
    txt_path = Path(out_dir) / (name + ".txt")
    txt_path.parent.mkdir(parents=True, exist_ok=True)
    with open(txt_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(doc.text)
    with open(txt_path.with_suffix(".ann"), "w", encoding="utf-8", newline="") as fh:
        fh.write(write_ann(doc))
    return txt_path
