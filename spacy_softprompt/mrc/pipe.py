"""What ``mrc_ner`` and ``mrc_relations`` share: a TrainablePipe around an
MRC span model (``spacy_softprompt.MRCSpanModel.v1``) that turns Docs into
query rows, runs them through the model in one forward per batch (or per
``max_batch_rows`` rows at inference) and trains on gold spans."""
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model, Optimizer

from ..annotations import get_entities
from ..encoder.storage import read_guarded
from .model import (
    LOSS_WEIGHT_KEYS,
    mrc_encoder,
    mrc_layout,
    mrc_module,
    mrc_text_limit,
    mrc_tokenizer,
    row_chunks,
    set_load_name,
    train_on_rows,
)
from .rows import MRCRows

QUERY_MODES = ("hard", "soft")


class MRCPipe(TrainablePipe):
    """Base class; subclasses implement ``_make_rows`` and ``set_annotations``."""

    def __init__(self, vocab: Vocab, model: Model, name: str, cfg: Dict[str, Any], scorer: Optional[Callable] = None):
        if cfg.get("query_mode") not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {cfg.get('query_mode')!r}")
        for key in ("max_batch_rows", "max_train_rows"):
            if cfg.get(key) is not None and int(cfg[key]) < 1:
                raise ValueError(f"{key} must be a positive number of rows or null")
        unknown = set(cfg.get("loss_weights") or {}) - set(LOSS_WEIGHT_KEYS)
        if unknown:
            raise ValueError(f"unknown loss_weights {sorted(unknown)}; expected some of {list(LOSS_WEIGHT_KEYS)}")
        if any(float(v) < 0 for v in (cfg.get("loss_weights") or {}).values()):
            raise ValueError("loss_weights must not be negative")
        for key in ("threshold", "match_threshold"):
            if not 0.0 < float(cfg[key]) < 1.0:
                raise ValueError(f"{key} must be in (0, 1), got {cfg[key]}")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg = dict(cfg)
        self.cfg["labels"] = list(self.cfg.get("labels") or [])
        self.cfg["questions"] = dict(self.cfg.get("questions") or {})
        self._query_cache: Dict[Any, numpy.ndarray] = {}

    # ---- labels -----------------------------------------------------------------
    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    def add_label(self, label: str) -> int:
        if label in self.cfg["labels"]:
            return 0
        if mrc_module(self.model) is not None:
            raise ValueError(f"Cannot add labels to '{self.name}' after it was initialised (one prompt per label).")
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    # ---- model helpers ----------------------------------------------------------
    @property
    def tokenizer(self):
        return mrc_tokenizer(self.model)

    @property
    def encoder(self):
        """The :class:`~spacy_softprompt.encoder.PromptedEncoder` (None before init)."""
        return mrc_encoder(self.model)

    @property
    def layout(self):
        return mrc_layout(self.model)

    @property
    def text_limit(self) -> int:
        return mrc_text_limit(self.model)

    def _options(self) -> Dict[str, Any]:
        return {
            "max_span_width": int(self.cfg.get("max_span_width") or 10),
            "threshold": float(self.cfg["threshold"]),
            "match_threshold": float(self.cfg["match_threshold"]),
            "loss_weights": dict(self.cfg.get("loss_weights") or {}),
            "max_match_candidates": self.cfg.get("max_match_candidates"),
        }

    def _make_rows(self, docs: Sequence[Doc], examples: Optional[Sequence[Example]] = None) -> MRCRows:
        raise NotImplementedError

    def _run(self, rows: MRCRows) -> Dict[str, numpy.ndarray]:
        """Decoded spans of all rows; rows are split into chunks of at most
        ``max_batch_rows`` (sorted by length) only when there are more."""
        rows.options = self._options()
        if not len(rows):
            return {"spans": numpy.zeros((0, 3), dtype="int64"), "probs": numpy.zeros((0,), dtype="float32")}
        chunks = row_chunks(rows, self.cfg.get("max_batch_rows"))
        if len(chunks) == 1:
            return self.model.predict(rows)
        spans, probs = [], []
        for chunk in chunks:
            out = self.model.predict(rows.select(chunk))
            found = out["spans"].copy()
            found[:, 0] = chunk[found[:, 0]]
            spans.append(found)
            probs.append(out["probs"])
        return {"spans": numpy.concatenate(spans), "probs": numpy.concatenate(probs)}

    def _token_spans(self, rows: MRCRows, out: Dict[str, numpy.ndarray]):
        """``(row, start_token, end_token, prob)`` of the decoded spans that lie in
        their row's owned token range."""
        found = out["spans"]
        if not len(found):
            return []
        r, i, j = found[:, 0], found[:, 1], found[:, 2]
        starts = rows.word_index[r, i]
        ends = rows.word_index[r, j] + 1
        result = []
        for row, s, e, p in zip(r.tolist(), starts.tolist(), ends.tolist(), out["probs"].tolist()):
            lo, hi = rows.specs[row].owner
            if lo <= s < hi:
                result.append((row, s, e, p))
        return result

    # ---- prediction ---------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]):
        docs = list(docs)
        rows = self._make_rows(docs)
        return rows, self._run(rows)

    # ---- training -----------------------------------------------------------------
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_get_examples(lambda: examples, f"{type(self).__name__}.update")
        rows = self._make_rows([eg.predicted for eg in examples], examples)
        if not len(rows):
            return losses
        rows.options = self._options()
        out = train_on_rows(self.model, rows, self.cfg.get("max_train_rows"))
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += out["loss"]
        return losses

    def get_loss(self, examples: Iterable[Example], scores) -> Tuple[float, Any]:
        """The loss of a batch (computed by the model; no gradient returned)."""
        examples = list(examples)
        rows = self._make_rows([eg.predicted for eg in examples], examples)
        if not len(rows):
            return 0.0, None
        rows.options = self._options()
        out, _ = self.model.begin_update(rows)
        return out["loss"], None

    def _initialize_model(self, labels: Sequence[str], prompt_texts: Dict[str, str]) -> None:
        if not labels:
            raise ValueError(f"'{self.name}': no labels were given and none are in the training data.")
        self.model.attrs["labels"] = list(labels)
        self.model.attrs["prompt_texts"] = dict(prompt_texts)
        self._query_cache = {}
        self.model.initialize()
        names = self.encoder.prompt_names
        if names != list(labels):
            raise ValueError(
                f"'{self.name}' was initialised before with prompts {names}; labels are now {list(labels)}"
            )

    # ---- serialization ----------------------------------------------------------------
    def from_disk(self, path, *, exclude=tuple()):
        set_load_name(self.model)
        self._query_cache = {}
        model_file = Path(path) / "model"
        size = model_file.stat().st_size if model_file.is_file() else 0
        return read_guarded(lambda: super(MRCPipe, self).from_disk(path, exclude=exclude), f"'{self.name}' saved data", size)

    def from_bytes(self, bytes_data, *, exclude=tuple()):
        set_load_name(self.model)
        self._query_cache = {}
        return read_guarded(
            lambda: super(MRCPipe, self).from_bytes(bytes_data, exclude=exclude), f"'{self.name}' saved data", len(bytes_data)
        )


def entities_on(doc: Doc, source: Doc, spans_key: str) -> Dict[Tuple[int, int, str], Span]:
    """Entities of ``source`` (gold) as spans of ``doc`` (widened to token
    edges), keyed by their gold ``(start_char, end_char, label)``."""
    spans = {}
    for ent in get_entities(source, spans_key):
        span = doc.char_span(ent.start_char, ent.end_char, label=ent.label_, alignment_mode="expand")
        if span is not None and len(span) > 0:
            spans[(ent.start_char, ent.end_char, ent.label_)] = span
    return spans


def observed_width(examples: Iterable[Example], spans_key: str, quantile: float = 1.0) -> Optional[int]:
    widths = [len(ent) for eg in examples for ent in get_entities(eg.reference, spans_key)]
    if not widths:
        return None
    return int(numpy.ceil(numpy.quantile(widths, quantile)))


def gold_array(gold: List[Tuple[int, int, int]]) -> numpy.ndarray:
    if not gold:
        return numpy.zeros((0, 3), dtype="int64")
    return numpy.unique(numpy.asarray(gold, dtype="int64").reshape(-1, 3), axis=0)
