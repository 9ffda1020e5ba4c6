"""``mrc_ner``: concept extraction as machine reading comprehension.

For every window of a Doc and every entity label there is one query row
(Peng et al. 2023; MRC-NER, Li et al. 2020):

* ``query_mode = "hard"``: ``[CLS] question [SEP] window [SEP]`` with the
  label's question (from the schema's ``questions.entities``, or the
  ``questions`` setting); token types 0 / 1.
* ``query_mode = "soft"``: ``[CLS] window [SEP]`` encoded with the label's own
  block of P trainable prompt vectors (``prompt_ids`` = label index; the
  encoder's prompt names are the labels).

All rows of a batch go through the encoder in one forward.  Start / end /
span-match heads decode spans that start on a word's first wordpiece and end on
a word's last; spans of different labels, and nested spans of one label, come
out independently.  Windows are runs of whole tokens that fit the encoder next
to the prompt and question; neighbouring windows overlap by
``window_overlap`` tokens and each reports the spans starting in its half of
the overlap.

Entities go to ``doc.spans[spans_key]`` (all, nested included; their
probabilities in the group's ``attrs["scores"]``) and, with ``set_ents``, a
non-overlapping view to ``doc.ents`` (:func:`~spacy_softprompt.annotations.set_entities`).
"""
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.util import filter_spans
from spacy.vocab import Vocab
from thinc.api import Config, Model

from ..annotations import get_entities
from ..pipe_base import gold_entities_on, pipe_settings
from ..scoring import ENTITY_SCORE_WEIGHTS
from ..settings import field_defaults, takes_settings
from .pipe import DEFAULT_MRC_MODEL, MRCPipe, MRCSettings, gold_array, observed_width
from .rows import MRCRows, RowSpec, build_rows, token_windows, tokenize_docs, tokenize_queries, window_owners


def default_question(label: str) -> str:
    return f"Find the {label.replace('_', ' ').replace('-', ' ').lower()} mentions in the text."


@Language.factory(
    "mrc_ner",
    assigns=["doc.ents", "doc.spans"],
    default_config={
        "model": Config().from_str(DEFAULT_MRC_MODEL)["model"],
        **field_defaults(MRCSettings),
        "set_ents": True,
        "window_overlap": 16,
        "scorer": {"@scorers": "spacy_softprompt.n2c2_scorer.v1"},
    },
    default_score_weights=ENTITY_SCORE_WEIGHTS,
)
@takes_settings(MRCSettings)
def make_mrc_ner(
    nlp: Language,
    name: str,
    model: Model,
    set_ents: bool,
    window_overlap: int,
    scorer: Optional[Callable],
    *,
    settings: MRCSettings,
) -> "MRCEntityRecognizer":
    """MRC concept extraction (see the module docstring).

    query_mode: "hard" (per-label question text) or "soft" (per-label prompt).
    labels: entity labels; null = the schema's (``initialize.components.<name>.task_schema``)
        or those in the training data.
    questions: label -> question; overrides the schema's questions (hard mode).
    spans_key: span group for all entities; set_ents: also set doc.ents.
    window_pieces: most context wordpieces per row (null: all that fit).
    window_overlap: tokens shared by neighbouring windows.
    max_span_width: longest entity in tokens; null = the longest in the training data.
    threshold / match_threshold: probabilities a start/end and a (start, end)
        pair must reach.
    loss_weights: {"start", "end", "match"} weights of the three losses;
        "positive": weight of the gold positions and pairs in all three losses.
    max_query_pieces: questions are cut to this many wordpieces.
    max_match_candidates: training scores at most this many (start, end) pairs
        per batch in the match loss (all gold pairs + sampled negatives; null: all).
    max_batch_rows: at inference, most rows per encoder forward (null: the
        whole batch in one forward).
    max_train_rows: in training, most rows per forward/backward; the chunks
        accumulate gradients, so a batch still makes one update (null: one
        forward per batch).
    """
    return MRCEntityRecognizer(nlp.vocab, model, name, **pipe_settings(locals()))


class MRCEntityRecognizer(MRCPipe):
    """One query row per (window, label); start/end/match heads; nested spans."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "mrc_ner",
        *,
        set_ents: bool = True,
        window_overlap: int = 16,
        scorer: Optional[Callable] = None,
        **settings: Any,
    ) -> None:
        """``settings``: those of :class:`~.pipe.MRCSettings` (all: :func:`make_mrc_ner`)."""
        own = {"set_ents": bool(set_ents), "window_overlap": int(window_overlap)}
        super().__init__(vocab, model, name, own, scorer=scorer, **settings)

    # ---- queries and windows ------------------------------------------------------
    def question(self, label: str) -> str:
        return self.cfg["questions"].get(label) or default_question(label)

    def _queries(self) -> List[numpy.ndarray]:
        """Query piece ids per label (empty arrays in soft mode)."""
        if "labels" not in self._query_cache:
            if self.cfg["query_mode"] == "hard":
                texts = [self.question(label) for label in self.labels]
                ids = tokenize_queries(self.tokenizer, texts, self.cfg["max_query_pieces"])
            else:
                ids = [numpy.zeros((0,), dtype="int64") for _ in self.labels]
            self._query_cache["labels"] = ids
        return self._query_cache["labels"]

    def context_budget(self) -> int:
        """Context wordpieces per row: the encoder's room minus specials and the
        longest question (hard mode), capped by ``window_pieces``."""
        layout = self.layout
        if self.cfg["query_mode"] == "hard":
            budget = self.text_limit - layout.n_pair - max((len(q) for q in self._queries()), default=0)
        else:
            budget = self.text_limit - layout.n_single
        if self.cfg.get("window_pieces"):
            budget = min(budget, int(self.cfg["window_pieces"]))
        if budget < 1:
            raise ValueError(f"'{self.name}': no room for context next to the prompt and questions")
        return budget

    def windows(self, docs: Sequence[Doc], pieces=None) -> List[List[Tuple[int, int]]]:
        """Token windows per Doc (windows without any wordpiece are skipped)."""
        pieces = pieces if pieces is not None else tokenize_docs(self.tokenizer, docs)
        budget = self.context_budget()
        out = []
        for doc_pieces in pieces:
            counts = doc_pieces.counts
            cum = numpy.concatenate([[0], numpy.cumsum(counts)])
            wins = token_windows(counts, budget, self.cfg["window_overlap"])
            out.append([(a, b) for a, b in wins if cum[b] > cum[a]])
        return out

    def _make_rows(self, docs: Sequence[Doc], examples: Optional[Sequence[Example]] = None) -> MRCRows:
        if not self.labels:
            raise ValueError(f"'{self.name}' has no labels: initialize it first")
        pieces = tokenize_docs(self.tokenizer, docs)
        queries = self._queries()
        specs: List[RowSpec] = []
        for d, windows in enumerate(self.windows(docs, pieces)):
            for (a, b), owner in zip(windows, window_owners(windows)):
                for k, label in enumerate(self.labels):
                    specs.append(RowSpec(doc=d, prompt_id=k, query=queries[k], ctx_start=a, ctx_end=b, owner=owner, key=(label,)))
        rows = build_rows(specs, pieces, self.layout)
        if examples is not None:
            rows.gold = self._gold(rows, docs, examples)
        return rows

    def _gold(self, rows: MRCRows, docs: Sequence[Doc], examples: Sequence[Example]) -> numpy.ndarray:
        by_doc: List[Dict[str, List[Tuple[int, int]]]] = []
        for doc, eg in zip(docs, examples):
            spans: Dict[str, List[Tuple[int, int]]] = {}
            for span in gold_entities_on(doc, eg.reference, self.cfg["spans_key"]).values():
                spans.setdefault(span.label_, []).append((span.start, span.end))
            by_doc.append(spans)
        gold = []
        for r, spec in enumerate(rows.specs):
            for s, e in by_doc[spec.doc].get(spec.key[0], ()):
                pos = rows.positions(r, s, e)
                if pos is not None:
                    gold.append((r, pos[0], pos[1]))
        return gold_array(gold)

    # ---- annotations ----------------------------------------------------------------
    def set_annotations(self, docs: Iterable[Doc], predictions) -> None:
        rows, out = predictions
        docs = list(docs)
        found: List[Dict[Tuple[int, int, str], float]] = [dict() for _ in docs]
        for row, s, e, p in self._token_spans(rows, out):
            spec = rows.specs[row]
            key = (s, e, spec.key[0])
            found[spec.doc][key] = max(p, found[spec.doc].get(key, 0.0))
        key = self.cfg["spans_key"]
        for doc, spans in zip(docs, found):
            items = [(Span(doc, s, e, label=label), p) for (s, e, label), p in spans.items()]
            items.sort(key=lambda item: (item[0].start_char, item[0].end_char, item[0].label_))
            doc.spans[key] = [span for span, _ in items]
            doc.spans[key].attrs["scores"] = [float(p) for _, p in items]
            if self.cfg["set_ents"]:
                doc.ents = filter_spans([span for span, _ in items])

    # ---- initialization -------------------------------------------------------------
    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
        task_schema: Optional[Any] = None,
        questions: Optional[Dict[str, str]] = None,
    ) -> None:
        """``task_schema``: a shipped schema name or a schema JSON path (null: none).

        Labels (given > configured > the schema's > the data's), questions
        (given > configured > the schema's ``questions.entities`` > a generic
        one) and ``max_span_width`` (configured > the data's longest entity),
        then build the encoder with one prompt per label."""
        from ..data.schema import load_schema

        validate_get_examples(get_examples, "MRCEntityRecognizer.initialize")
        schema_obj = load_schema(task_schema) if task_schema else None
        observed = sorted({ent.label_ for eg in get_examples() for ent in get_entities(eg.reference, self.cfg["spans_key"])})
        chosen = list(labels or self.cfg["labels"] or (schema_obj.entity_labels if schema_obj else []) or observed)
        self.cfg["labels"] = list(dict.fromkeys(chosen))
        for label in self.labels:
            self.vocab.strings.add(label)
        texts = {}
        for label in self.labels:
            text = (questions or {}).get(label) or self.cfg["questions"].get(label)
            if not text and schema_obj is not None:
                text = schema_obj.question("entities", label)
            texts[label] = text or default_question(label)
        self.cfg["questions"] = texts
        if self.cfg.get("max_span_width") is None:
            self.cfg["max_span_width"] = observed_width(get_examples(), self.cfg["spans_key"]) or 10
        self._initialize_model(self.labels, texts)
