"""``mrc_relations``: relations as MRC queries conditioned on a head entity.

For every entity that can head a relation label (e.g. the Drug of n2c2's
``Dosage-Drug``) and every such label there is one query row:

* ``query_mode = "hard"``: the label's question template with the head
  mention filled in, e.g. ``[CLS] What is the amount of aspirin taken? [SEP]
  context [SEP]`` (schema ``questions.relations.<label>.template``; ``{arg1}``
  / ``{arg2}`` name the head argument, ``{head}`` works too).
* ``query_mode = "soft"``: the relation label's prompt vectors, then the head
  mention's own wordpieces as the query segment: ``[CLS] aspirin [SEP]
  context [SEP]`` with ``prompt_ids`` = label index.

The context is the head's sentence and ``context_sentences`` neighbours on
each side (``doc.sents`` when sentence boundaries are set, else
``context_window`` tokens on each side), cut to fit the encoder around the
head.  Answer spans are decoded like ``mrc_ner``'s; an answer that is exactly
an entity of an allowed argument type for (label, head type) becomes a
relation, with the arguments in the label's order (``arg1``/``arg2`` as in the
data, e.g. n2c2: arg1 the attribute, arg2 the drug).

``mark_head`` (default on) gives the head mention's wordpieces in the context
the query's token type (0 instead of 1): the query names the head by its text
only, so without a mark two mentions of the same drug (or two drugs sharing
one sentence, on a small model) are told apart by nothing but attention
patterns.  It is a no-op for tokenizers without a second token type (RoBERTa).

Training uses the gold entities and relations of the reference Docs; inference
uses the entities upstream components predicted (``doc.spans[spans_key]``,
else ``doc.ents``), so evaluation is end to end.  Relations go to
``doc._.relations``.
"""
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model

from ..annotations import get_entities, get_relations, make_relation
from ..pipe_base import EntityKey, gold_entities_on, gold_relations, pipe_settings
from ..scoring import RELATION_SCORE_WEIGHTS
from ..settings import field_defaults, takes_settings
from .pipe import DEFAULT_MRC_MODEL, MRCPipe, MRCSettings, gold_array
from .rows import MRCRows, RowSpec, build_rows, context_around, tokenize_docs, tokenize_queries

HEAD_SIDES = ("arg1", "arg2")


def default_template(label: str) -> str:
    return f"Which {label.replace('_', ' ').replace('-', ' ').lower()} relations does {{head}} have?"


def fill_template(template: str, head_side: str, head_text: str) -> str:
    return template.replace("{head}", head_text).replace("{" + head_side + "}", head_text)


@Language.factory(
    "mrc_relations",
    assigns=["doc._.relations"],
    requires=["doc.ents"],
    default_config={
        "model": Config().from_str(DEFAULT_MRC_MODEL)["model"],
        **field_defaults(MRCSettings),
        "allowed_pairs": None,
        "head_argument": None,
        "context_sentences": 1,
        "context_window": 48,
        "mark_head": True,
        "negative_rows": 1.0,
        "scorer": {"@scorers": "spacy_softprompt.n2c2_scorer.v1"},
    },
    default_score_weights=RELATION_SCORE_WEIGHTS,
)
@takes_settings(MRCSettings)
def make_mrc_relations(
    nlp: Language,
    name: str,
    model: Model,
    allowed_pairs: Optional[Dict[str, List[List[str]]]],
    head_argument: Optional[Dict[str, str]],
    context_sentences: int,
    context_window: int,
    mark_head: bool,
    negative_rows: float,
    scorer: Optional[Callable],
    *,
    settings: MRCSettings,
) -> "MRCRelationExtractor":
    """MRC relation extraction (see the module docstring).

    labels, allowed_pairs (label -> [[arg1 label, arg2 label], ...]),
    head_argument (label -> "arg1" | "arg2", the argument a query asks about),
    questions (label -> template): null = from the schema
    (``initialize.components.<name>.task_schema``) or the training data.
    context_sentences: neighbour sentences on each side of the head's sentence.
    context_window: tokens on each side of the head when there are no sentences.
    mark_head: give the head's context wordpieces the query's token type.
    negative_rows: in training, the fraction of queries without any gold
        answer that are kept (sampled per batch); 1.0 = all (the paper's setup).
    window_pieces: most context wordpieces per row (null: all that fit).
    Other settings as for ``mrc_ner``.
    """
    return MRCRelationExtractor(nlp.vocab, model, name, **pipe_settings(locals()))


class MRCRelationExtractor(MRCPipe):
    """One query row per (head entity, relation label); answers are entities."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "mrc_relations",
        *,
        allowed_pairs: Optional[Dict[str, List[List[str]]]] = None,
        head_argument: Optional[Dict[str, str]] = None,
        context_sentences: int = 1,
        context_window: int = 48,
        mark_head: bool = True,
        negative_rows: float = 1.0,
        scorer: Optional[Callable] = None,
        **settings: Any,
    ) -> None:
        """``settings``: those of :class:`~.pipe.MRCSettings` (all: :func:`make_mrc_relations`)."""
        own = {
            "allowed_pairs": {k: [list(p) for p in v] for k, v in (allowed_pairs or {}).items()},
            "head_argument": dict(head_argument or {}),
            "context_sentences": int(context_sentences),
            "context_window": int(context_window),
            "mark_head": bool(mark_head),
            "negative_rows": float(negative_rows),
        }
        if not 0.0 <= own["negative_rows"] <= 1.0:
            raise ValueError(f"negative_rows must be in [0, 1], got {negative_rows}")
        for label, side in own["head_argument"].items():
            if side not in HEAD_SIDES:
                raise ValueError(f"head_argument[{label!r}] must be 'arg1' or 'arg2', got {side!r}")
        super().__init__(vocab, model, name, own, scorer=scorer, **settings)

    # ---- label structure ------------------------------------------------------------
    def head_side(self, label: str) -> str:
        return self.cfg["head_argument"].get(label, "arg2")

    def head_types(self, label: str) -> Set[str]:
        index = 1 if self.head_side(label) == "arg2" else 0
        return {pair[index] for pair in self.cfg["allowed_pairs"].get(label, [])}

    def answer_types(self, label: str, head_type: str) -> Set[str]:
        h = 1 if self.head_side(label) == "arg2" else 0
        return {pair[1 - h] for pair in self.cfg["allowed_pairs"].get(label, []) if pair[h] == head_type}

    def template(self, label: str) -> str:
        return self.cfg["questions"].get(label) or default_template(label)

    def make_relation(self, label: str, head: Span, answer: Span, score: Optional[float] = None):
        if self.head_side(label) == "arg2":
            return make_relation(label, answer, head, score=score)
        return make_relation(label, head, answer, score=score)

    # ---- rows -----------------------------------------------------------------------
    def _context(self, doc: Doc, head: Span, sent_starts: Optional[numpy.ndarray]) -> Tuple[int, int]:
        if sent_starts is not None and len(sent_starts):
            k = self.cfg["context_sentences"]
            first = int(numpy.searchsorted(sent_starts, head.start, side="right")) - 1
            last = int(numpy.searchsorted(sent_starts, head.end - 1, side="right")) - 1
            lo = int(sent_starts[max(first - k, 0)])
            stop = last + k + 1
            hi = int(sent_starts[stop]) if stop < len(sent_starts) else len(doc)
            return lo, hi
        w = self.cfg["context_window"]
        return max(head.start - w, 0), min(head.end + w, len(doc))

    def _heads(self, entities: Sequence[Sequence[Span]]) -> List[Tuple[int, int, Span]]:
        """(doc index, label index, head entity) for every query."""
        heads = []
        head_types = [self.head_types(label) for label in self.labels]
        for d, ents in enumerate(entities):
            seen = set()
            for ent in sorted(ents, key=lambda s: (s.start, s.end, s.label_)):
                key = (ent.start, ent.end, ent.label_)
                if key in seen:
                    continue
                seen.add(key)
                for k, types in enumerate(head_types):
                    if ent.label_ in types:
                        heads.append((d, k, ent))
        return heads

    def _make_rows(
        self,
        docs: Sequence[Doc],
        examples: Optional[Sequence[Example]] = None,
        entities: Optional[Sequence[Sequence[Span]]] = None,
    ) -> MRCRows:
        if not self.labels:
            raise ValueError(f"'{self.name}' has no labels: initialize it first")
        gold_rel: Optional[List[Dict[Tuple, Set[EntityKey]]]] = None
        if entities is None:
            if examples is not None:
                entities, gold_rel = [], []
                for doc, eg in zip(docs, examples):
                    on = gold_entities_on(doc, eg.reference, self.cfg["spans_key"])
                    entities.append(list(on.values()))
                    gold_rel.append(self._gold_answers(eg, on))
            else:
                entities = [get_entities(doc, self.cfg["spans_key"]) for doc in docs]
        heads = self._heads(entities)
        pieces = tokenize_docs(self.tokenizer, docs)
        layout = self.layout
        max_q = self.cfg["max_query_pieces"]
        if self.cfg["query_mode"] == "hard":
            texts = [fill_template(self.template(self.labels[k]), self.head_side(self.labels[k]), h.text) for _, k, h in heads]
            queries = tokenize_queries(self.tokenizer, texts, max_q)
        else:
            queries = [pieces[d].pieces_of(h.start, h.end)[:max_q] for d, _, h in heads]
        limit = self.text_limit - layout.n_pair
        sents: Dict[int, Optional[numpy.ndarray]] = {}
        specs: List[RowSpec] = []
        for (d, k, head), query in zip(heads, queries):
            doc = docs[d]
            if d not in sents:
                sents[d] = (
                    numpy.asarray([s.start for s in doc.sents], dtype="int64")
                    if doc.has_annotation("SENT_START")
                    else None
                )
            lo, hi = self._context(doc, head, sents[d])
            budget = limit - len(query)
            if self.cfg.get("window_pieces"):
                budget = min(budget, int(self.cfg["window_pieces"]))
            a, b = context_around(pieces[d].counts, lo, hi, head.start, head.end, max(budget, 1))
            key = (self.labels[k], (head.start, head.end, head.label_))
            mark = (head.start, head.end) if self.cfg.get("mark_head", True) else (0, 0)
            specs.append(RowSpec(doc=d, prompt_id=k, query=query, ctx_start=a, ctx_end=b, key=key, mark=mark))
        rows = build_rows(specs, pieces, layout)
        if gold_rel is not None:
            gold = []
            for r, spec in enumerate(rows.specs):
                for s, e, _ in gold_rel[spec.doc].get(spec.key, ()):
                    pos = rows.positions(r, s, e)
                    if pos is not None:
                        gold.append((r, pos[0], pos[1]))
            rows.gold = gold_array(gold)
            rate = self.cfg.get("negative_rows", 1.0)
            if rate < 1.0 and len(rows):
                positive = numpy.zeros(len(rows), dtype=bool)
                positive[rows.gold[:, 0]] = True
                negatives = numpy.flatnonzero(~positive)
                n_keep = int(round(rate * len(negatives)))
                sample = numpy.random.permutation(negatives)[:n_keep]
                rows = rows.select(numpy.sort(numpy.concatenate([numpy.flatnonzero(positive), sample])))
        return rows

    def _gold_answers(self, eg: Example, on: Dict[Tuple[int, int, str], Span]) -> Dict[Tuple, Set[EntityKey]]:
        """(label, head key) -> answer entity keys (token offsets on the predicted doc)."""
        answers: Dict[Tuple, Set[EntityKey]] = {}
        for rel in get_relations(eg.reference):
            label = rel["label"]
            if label not in self.cfg["allowed_pairs"]:
                continue
            a1, a2 = on.get(tuple(rel["arg1"])), on.get(tuple(rel["arg2"]))
            if a1 is None or a2 is None:
                continue
            head, answer = (a2, a1) if self.head_side(label) == "arg2" else (a1, a2)
            key = (label, (head.start, head.end, head.label_))
            answers.setdefault(key, set()).add((answer.start, answer.end, answer.label_))
        return answers

    # ---- annotations ------------------------------------------------------------------
    def set_annotations(self, docs: Iterable[Doc], predictions) -> None:
        rows, out = predictions
        docs = list(docs)
        lookup: List[Dict[Tuple[int, int], List[Span]]] = []
        for doc in docs:
            by_span: Dict[Tuple[int, int], List[Span]] = {}
            for ent in get_entities(doc, self.cfg["spans_key"]):
                by_span.setdefault((ent.start, ent.end), []).append(ent)
            lookup.append(by_span)
        found: List[Dict[Tuple, Dict[str, Any]]] = [dict() for _ in docs]
        for row, s, e, p in self._token_spans(rows, out):
            spec = rows.specs[row]
            label, (hs, he, hl) = spec.key
            doc = docs[spec.doc]
            allowed = self.answer_types(label, hl)
            head = Span(doc, hs, he, label=hl)
            for answer in lookup[spec.doc].get((s, e), ()):
                if answer.label_ not in allowed or (answer.start, answer.end, answer.label_) == (hs, he, hl):
                    continue
                rel = self.make_relation(label, head, answer, score=p)
                key = (label, tuple(rel["arg1"]), tuple(rel["arg2"]))
                if key not in found[spec.doc] or found[spec.doc][key]["score"] < p:
                    found[spec.doc][key] = rel
        for doc, rels in zip(docs, found):
            doc._.relations = [rels[k] for k in sorted(rels)]

    # ---- initialization -----------------------------------------------------------------
    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
        task_schema: Optional[Any] = None,
        questions: Optional[Dict[str, str]] = None,
        allowed_pairs: Optional[Dict[str, List[List[str]]]] = None,
        head_argument: Optional[Dict[str, str]] = None,
    ) -> None:
        """``task_schema``: a shipped schema name or a schema JSON path (null: none).

        Each of labels, allowed pairs, head argument and question templates is
        taken from the argument, else the component's settings, else the
        schema (head argument: the placeholder in its template), else the
        training data (head argument: the side whose entity type is in more
        relation labels, then the side with fewer distinct entities, i.e. the
        drug that has several attributes; question: a generic template).  ``max_span_width`` is the
        longest answer entity in the data unless configured."""
        from ..data.schema import load_schema

        validate_get_examples(get_examples, "MRCRelationExtractor.initialize")
        schema_obj = load_schema(task_schema) if task_schema else None
        observed = _observe(get_examples())
        chosen = list(labels or self.cfg["labels"] or (schema_obj.relation_labels if schema_obj else []) or sorted(observed["pairs"]))
        self.cfg["labels"] = list(dict.fromkeys(chosen))
        for label in self.labels:
            self.vocab.strings.add(label)
        pairs = dict(allowed_pairs or self.cfg["allowed_pairs"] or {})
        head_argument = dict(head_argument or {})
        templates = dict(questions or {})
        for label in self.labels:
            if label not in pairs:
                if schema_obj is not None and label in schema_obj.pairs:
                    pairs[label] = [list(p) for p in schema_obj.pairs[label]]
                else:
                    pairs[label] = sorted([list(p) for p in observed["pairs"].get(label, ())])
            template = templates.get(label) or self.cfg["questions"].get(label)
            if not template and schema_obj is not None:
                spec = schema_obj.questions.get("relations", {}).get(label)
                template = spec.get("template") if isinstance(spec, dict) else None
            templates[label] = template or default_template(label)
            side = head_argument.get(label) or self.cfg["head_argument"].get(label)
            if side is None:
                side = _side_in_template(templates[label]) or observed["head_side"].get(label, "arg2")
            if side not in HEAD_SIDES:
                raise ValueError(f"head_argument[{label!r}] must be 'arg1' or 'arg2', got {side!r}")
            head_argument[label] = side
        self.cfg["allowed_pairs"] = {k: [list(p) for p in v] for k, v in pairs.items() if k in self.labels}
        self.cfg["head_argument"] = head_argument
        self.cfg["questions"] = templates
        if self.cfg.get("max_span_width") is None:
            widths = [w for label in self.labels for w in observed["answer_widths"].get((label, head_argument[label]), [])]
            self.cfg["max_span_width"] = max(widths) if widths else 10
        prompt_texts = {label: fill_template(templates[label], head_argument[label], "it") for label in self.labels}
        self._initialize_model(self.labels, prompt_texts)


def _side_in_template(template: str) -> Optional[str]:
    has1, has2 = "{arg1}" in template, "{arg2}" in template
    if has1 != has2:
        return "arg1" if has1 else "arg2"
    return None


def _observe(examples: Iterable[Example]) -> Dict[str, Any]:
    """Relation labels with argument type pairs, the head side per label (the side
    with fewer distinct entities), and answer widths per (label, head side)."""
    pairs: Dict[str, Set[Tuple[str, str]]] = {}
    distinct: Dict[str, List[Set]] = {}
    widths: Dict[Tuple[str, str], List[int]] = {}
    for rel in gold_relations(examples):
        label = rel.label
        pairs.setdefault(label, set()).add((rel.arg1[2], rel.arg2[2]))
        sets = distinct.setdefault(label, [set(), set()])
        sets[0].add((rel.example, *rel.arg1))
        sets[1].add((rel.example, *rel.arg2))
        for side, span in (("arg2", rel.span1), ("arg1", rel.span2)):  # answer = the other side
            if span is not None:
                widths.setdefault((label, side), []).append(len(span))
    # the head is the side whose entity type takes part in more relation labels
    # (n2c2: Drug is in all of them), then the side with fewer distinct entities
    labels_of_type: Dict[str, Set[str]] = {}
    for label, type_pairs in pairs.items():
        for t1, t2 in type_pairs:
            labels_of_type.setdefault(t1, set()).add(label)
            labels_of_type.setdefault(t2, set()).add(label)
    head_side = {}
    for label, (a1, a2) in distinct.items():
        reach1 = max(len(labels_of_type[t1]) for t1, _ in pairs[label])
        reach2 = max(len(labels_of_type[t2]) for _, t2 in pairs[label])
        if reach1 != reach2:
            head_side[label] = "arg1" if reach1 > reach2 else "arg2"
        else:
            head_side[label] = "arg1" if len(a1) < len(a2) else "arg2"
    return {"pairs": pairs, "head_side": head_side, "answer_widths": widths}
