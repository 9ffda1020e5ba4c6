"""``token_ner``: concepts by token classification (BILUO tags) over the transformer listener.

A drop-in alternative to spaCy's transition-based ``ner`` in the single-pass
pipeline (``transformer -> token_ner -> relation_extractor``), made for the
GPU: the network is one linear layer (optionally a hidden layer first) over
the listener's token vectors, and decoding is a constrained Viterbi over the
whole batch with array operations (see :mod:`.biluo_decoding`), run on the
host after one device-to-host copy of the batch's scores; the
transition-based parser instead makes one device round trip per token step.

Gold tags come from the reference's non-overlapping view (``doc.ents``),
aligned to the predicted tokens exactly as ``ner`` does
(``Example.get_aligned_ner``); tokens without a reliable alignment (missing or
misaligned gold) are left out of the loss, never labelled ``O``. The loss is
softmax cross-entropy averaged over the tokens that have a gold tag.

Predicted entities go to ``doc.ents`` and, unless ``spans_key`` is null, to
``doc.spans[spans_key]`` (the same non-overlapping spans), so the relation
extractor and the n2c2 scorer read this component's output and never a stale
span group.
"""
from itertools import islice
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, set_dropout_rate
from thinc.types import Floats2d

from ..annotations import ENTITY_SPANS_KEY
from ..pipe_base import HeadPipe, pipe_settings
from ..scoring import ENTITY_SCORE_WEIGHTS
from .biluo_decoding import decode, n_tags, path_spans, tag_names
from .listener import LISTENER_TOK2VEC

DEFAULT_TOKEN_NER_MODEL = (
    """
[model]
@architectures = "spacy_softprompt.TokenNERModel.v1"
hidden_width = 0
dropout = 0.1
"""
    + LISTENER_TOK2VEC
)

MISSING = -1


@Language.factory(
    "token_ner",
    assigns=["doc.ents", "doc.spans"],
    default_config={
        "model": Config().from_str(DEFAULT_TOKEN_NER_MODEL)["model"],
        "spans_key": ENTITY_SPANS_KEY,
        "scorer": {"@scorers": "spacy_softprompt.n2c2_scorer.v1"},
    },
    default_score_weights=ENTITY_SCORE_WEIGHTS,
)
def make_token_ner(
    nlp: Language, name: str, model: Model, spans_key: Optional[str], scorer: Optional[Callable]
) -> "TokenEntityRecognizer":
    """Token-classification concept extraction (see the module docstring).
    spans_key: span group that also receives the entities (null: ``doc.ents`` only).
    Labels come from ``initialize`` (the training data, or its ``labels`` setting)."""
    return TokenEntityRecognizer(nlp.vocab, model, name, **pipe_settings(locals()))


class TokenEntityRecognizer(HeadPipe):
    """BILUO tagger with constrained decoding; writes ``doc.ents`` (and a span group)."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "token_ner",
        *,
        spans_key: Optional[str] = ENTITY_SPANS_KEY,
        labels: Optional[Sequence[str]] = None,
        scorer: Optional[Callable] = None,
    ) -> None:
        super().__init__(vocab, model, name, {"labels": list(labels or []), "spans_key": spans_key}, scorer=scorer)

    # ---- labels -----------------------------------------------------------------
    @property
    def label_data(self) -> Tuple[str, ...]:
        return self.labels

    @property
    def tag_names(self) -> List[str]:
        return tag_names(self.labels)

    # ---- gold -------------------------------------------------------------------
    def gold_tags(self, example: Example) -> numpy.ndarray:
        """Tag ids of the predicted tokens (``MISSING`` where the gold is missing,
        misaligned or of an unknown label)."""
        index = {name: i for i, name in enumerate(self.tag_names)}
        tags = example.get_aligned_ner()
        return numpy.asarray([index.get(tag, MISSING) if tag else MISSING for tag in tags], dtype="int32")

    # ---- prediction -------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> numpy.ndarray:
        """``[n, 4]`` ints ``(doc, start, end, label id)`` of the decoded entities."""
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return numpy.zeros((0, 4), dtype="int64")
        return self.decode(self.tag_scores(docs))

    def tag_scores(self, docs: List[Doc]) -> List[Floats2d]:
        """Per-Doc tag scores at inference, ``self.model.predict(docs)``. With the shipped
        architecture (``chain(tok2vec, with_array(layers))``) each Doc's token vectors go
        through the layers on their own: no copy of the batch's vectors into one array."""
        tok2vec, per_token = (self.model.layers + [None, None])[:2]
        if len(self.model.layers) != 2 or not per_token.name.startswith("with_array") or len(per_token.layers) != 1:
            return self.model.predict(docs)
        layers, n_out = per_token.layers[0], n_tags(len(self.labels))
        return [
            layers.predict(vectors) if vectors.shape[0] else self.model.ops.alloc2f(0, n_out)  # empty Doc: width 0
            for vectors in tok2vec.predict(docs)
        ]

    def decode(self, scores: List[Floats2d]) -> numpy.ndarray:
        """Constrained decoding of a batch of per-Doc tag scores, on the host: the
        scores come over in one copy (one device sync per batch, not one per Doc);
        a loop over token positions on a GPU would launch kernels at every position.
        :func:`biluo_decoding.decode` gives the Viterbi's paths, running it only
        where the argmax is in doubt."""
        ops = self.model.ops
        lengths = numpy.asarray([s.shape[0] for s in scores], dtype="int64")
        K = n_tags(len(self.labels))
        total = int(lengths.sum())
        paths = numpy.zeros((len(scores), int(lengths.max(initial=0))), dtype="int32")
        if total:
            flat = ops.to_numpy(ops.xp.concatenate([s.reshape(-1, K) for s in scores if s.shape[0]]))
            rows = numpy.repeat(numpy.arange(len(scores)), lengths)
            columns = numpy.arange(total) - numpy.repeat(numpy.cumsum(lengths) - lengths, lengths)
            paths[rows, columns] = decode(flat, lengths)
        return path_spans(paths, lengths)

    def set_annotations(self, docs: Iterable[Doc], predictions: numpy.ndarray) -> None:
        docs = list(docs)
        found: List[List[Span]] = [[] for _ in docs]
        labels = self.labels
        for d, start, end, label in predictions.tolist():
            found[d].append(Span(docs[d], start, end, label=labels[label]))
        key = self.cfg["spans_key"]
        for doc, spans in zip(docs, found):
            doc.set_ents(spans, default="outside")
            if key:
                doc.spans[key] = spans

    # ---- training ---------------------------------------------------------------
    def learn(self, examples: List[Example], drop: float) -> Optional[float]:
        if not any(len(eg.predicted) for eg in examples):
            return None
        set_dropout_rate(self.model, drop)
        scores, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, d_scores = self.get_loss(examples, scores)
        backprop(d_scores)
        return loss

    def get_loss(self, examples: Iterable[Example], scores: List[Floats2d]) -> Tuple[float, List[Floats2d]]:
        """Softmax cross-entropy over the tokens with a gold tag (mean); others get no gradient."""
        ops = self.model.ops
        xp = ops.xp
        lengths = [int(s.shape[0]) for s in scores]
        truth = numpy.concatenate([self.gold_tags(eg) for eg in examples] or [numpy.zeros((0,), "int32")])
        if truth.shape[0] != sum(lengths):
            raise ValueError(f"'{self.name}': {sum(lengths)} token scores for {truth.shape[0]} gold tags")
        K = n_tags(len(self.labels))
        flat = xp.concatenate([s.reshape(-1, K) for s in scores]).astype("float32") if scores else ops.alloc2f(0, K)
        valid = numpy.flatnonzero(truth != MISSING)
        n_valid = max(1, len(valid))
        shifted = flat - flat.max(axis=1, keepdims=True)
        probs = xp.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        d_flat = ops.alloc2f(*flat.shape)
        rows = ops.asarray1i(valid)
        gold = ops.asarray1i(truth[valid])
        d_flat[rows] = probs[rows]
        d_flat[rows, gold] -= 1.0
        d_flat /= n_valid
        log_probs = shifted[rows, gold] - xp.log(xp.exp(shifted[rows]).sum(axis=1))
        loss = float(-log_probs.sum()) / n_valid
        return loss, ops.unflatten(d_flat, ops.asarray1i(lengths))

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Labels (given > configured > those of the training data's ``doc.ents``),
        then the model on a sample of up to 10 docs."""
        validate_get_examples(get_examples, "TokenEntityRecognizer.initialize")
        chosen = labels or self.cfg["labels"] or sorted({ent.label_ for eg in get_examples() for ent in eg.reference.ents})
        for label in chosen:
            self.add_label(label)
        self.check_labels_found("entity labels")
        self.model.get_ref("output_layer").set_dim("nO", n_tags(len(self.labels)))
        sample = [eg.predicted for eg in islice(get_examples(), 10)]
        self.model.initialize(X=sample)
