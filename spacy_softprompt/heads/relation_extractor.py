"""``relation_extractor``: a trainable pipe that links entities with typed relations.

Candidates are ordered pairs of entities ``(arg1, arg2)`` whose label pair is
allowed for some relation label and whose token gap is at most
``max_token_distance`` (sentence boundaries are not a limit: clinical
relations often cross them). Training uses the gold entities of the reference
doc; inference uses the entities predicted upstream (``doc.spans[spans_key]``
when present, else ``doc.ents``), so evaluation is end to end. The classifier
has a "no relation" outcome; predicted relations go to ``doc._.relations``.
"""
from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, set_dropout_rate
from thinc.types import Floats2d

from ..annotations import ENTITY_SPANS_KEY, get_entities, get_relations, make_relation
from ..pipe_base import HeadPipe, gold_entities_on, gold_relations, pipe_settings
from ..scoring import RELATION_SCORE_WEIGHTS
from .listener import LISTENER_TOK2VEC

NO_RELATION = "_NONE_"

DEFAULT_REL_MODEL = (
    """
[model]
@architectures = "spacy_softprompt.RelationModel.v1"
hidden_width = 256
distance_width = 16
dropout = 0.1
"""
    + LISTENER_TOK2VEC
)


@Language.factory(
    "relation_extractor",
    assigns=["doc._.relations"],
    requires=["doc.ents"],
    default_config={
        "model": Config().from_str(DEFAULT_REL_MODEL)["model"],
        "spans_key": ENTITY_SPANS_KEY,
        "labels": None,
        "allowed_pairs": None,
        "max_token_distance": None,
        "threshold": 0.0,
        "scorer": {"@scorers": "spacy_softprompt.n2c2_scorer.v1"},
    },
    # relations are selected on; the entities they start from are reported too
    default_score_weights={**RELATION_SCORE_WEIGHTS, "ents_strict_f": 0.0, "ents_lenient_f": 0.0, "ents_per_type": None},
)
def make_relation_extractor(
    nlp: Language,
    name: str,
    model: Model,
    spans_key: str,
    labels: Optional[List[str]],
    allowed_pairs: Optional[Dict[str, List[List[str]]]],
    max_token_distance: Optional[int],
    threshold: float,
    scorer: Optional[Callable],
) -> "RelationExtractor":
    """Create a relation extractor. ``labels``, ``allowed_pairs`` (relation label ->
    list of [arg1 label, arg2 label]) and ``max_token_distance`` are learned from
    the training data by ``initialize`` when left as null. A pair gets the most
    probable label when it beats "no relation" and its probability reaches
    ``threshold`` (0 = plain argmax)."""
    return RelationExtractor(nlp.vocab, model, name, **pipe_settings(locals()))


class RelationExtractor(HeadPipe):
    """Classifies candidate entity pairs into relation labels or "no relation"."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "relation_extractor",
        *,
        spans_key: str = ENTITY_SPANS_KEY,
        labels: Optional[Sequence[str]] = None,
        allowed_pairs: Optional[Dict[str, List[List[str]]]] = None,
        max_token_distance: Optional[int] = None,
        threshold: float = 0.5,
        scorer: Optional[Callable] = None,
    ) -> None:
        cfg = {
            "spans_key": spans_key,
            "labels": list(labels or []),
            "allowed_pairs": {k: [list(p) for p in v] for k, v in (allowed_pairs or {}).items()},
            "max_token_distance": max_token_distance,
            "threshold": threshold,
        }
        super().__init__(vocab, model, name, cfg, scorer=scorer)

    # ---- candidates ---------------------------------------------------------------
    def candidates(self, entities: Sequence[Span]) -> List[Tuple[Span, Span]]:
        """Ordered entity pairs allowed by type and distance (see :meth:`candidate_index`)."""
        ents, index = self.candidate_index(entities)
        return [(ents[a], ents[b]) for a, b in index.tolist()]

    def _label_tables(self):
        """``(label -> id, allowed[arg1 id, arg2 id], allowed per relation label)``;
        the last id stands for any label no relation mentions."""
        key = repr(self.cfg["allowed_pairs"]) + repr(self.cfg["labels"])
        cached = getattr(self, "_tables_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        names = sorted({label for pairs in self.cfg["allowed_pairs"].values() for pair in pairs for label in pair})
        ids = {name: i for i, name in enumerate(names)}
        n = len(names) + 1
        per_label = numpy.zeros((len(self.labels), n, n), dtype=bool)
        for i, label in enumerate(self.labels):
            for a, b in self.cfg["allowed_pairs"].get(label, []):
                per_label[i, ids[a], ids[b]] = True
        allowed = numpy.zeros((n, n), dtype=bool)
        for pairs in self.cfg["allowed_pairs"].values():
            for a, b in pairs:
                allowed[ids[a], ids[b]] = True
        tables = (ids, allowed, per_label)
        self._tables_cache = (key, tables)
        return tables

    def candidate_index(self, entities: Sequence[Span]) -> Tuple[List[Span], numpy.ndarray]:
        """``(entities sorted by (start, end, label), [n_pairs, 2] indices into them)``:
        ordered pairs (arg1, arg2) whose label pair is allowed, at most
        ``max_token_distance`` tokens apart, identical spans excluded; for each
        unordered pair (i < j in sorted order) (i, j) comes before (j, i).

        Array operations over the sorted entities: a pair (i, j) is considered
        only while entity j starts within the distance limit of i's end, so the
        cost grows with entities x neighbours, not entities squared, and no
        Python code runs per pair."""
        ents = sorted(entities, key=lambda s: (s.start, s.end, s.label_))
        n = len(ents)
        empty = numpy.zeros((0, 2), dtype="int64")
        if n < 2:
            return ents, empty
        ids, allowed, _ = self._label_tables()
        unknown = allowed.shape[0] - 1
        starts = numpy.fromiter((e.start for e in ents), dtype="int64", count=n)
        ends = numpy.fromiter((e.end for e in ents), dtype="int64", count=n)
        labels = numpy.fromiter((ids.get(e.label_, unknown) for e in ents), dtype="int64", count=n)
        max_dist = self.cfg["max_token_distance"]
        first = numpy.arange(1, n + 1, dtype="int64")
        if max_dist is None:
            stop = numpy.full(n, n, dtype="int64")
        else:
            stop = numpy.maximum(numpy.searchsorted(starts, ends + int(max_dist), side="right"), first)
        counts = stop - first
        if not counts.sum():
            return ents, empty
        i = numpy.repeat(numpy.arange(n, dtype="int64"), counts)
        j = numpy.repeat(first, counts) + (numpy.arange(counts.sum(), dtype="int64") - numpy.repeat(numpy.cumsum(counts) - counts, counts))
        same = (starts[i] == starts[j]) & (ends[i] == ends[j]) & (labels[i] == labels[j])
        keep = numpy.stack([allowed[labels[i], labels[j]], allowed[labels[j], labels[i]]], axis=1) & ~same[:, None]
        both = numpy.stack([numpy.stack([i, j], axis=1), numpy.stack([j, i], axis=1)], axis=1)
        return ents, both[keep]

    @staticmethod
    def _index_pair_array(ents: Sequence[Span], index: numpy.ndarray) -> numpy.ndarray:
        """Token offsets ``[start1, end1, start2, end2]`` of each indexed pair."""
        if not len(index):
            return numpy.zeros((0, 4), dtype="i")
        bounds = numpy.asarray([(e.start, e.end) for e in ents], dtype="i").reshape(-1, 2)
        return numpy.concatenate([bounds[index[:, 0]], bounds[index[:, 1]]], axis=1)

    def _pair_array(self, pairs: List[Tuple[Span, Span]]) -> numpy.ndarray:
        return numpy.asarray(
            [(a.start, a.end, b.start, b.end) for a, b in pairs], dtype="i"
        ).reshape(-1, 4)

    # ---- prediction --------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]):
        """``(per doc (sorted entities, pair index), scores)``: one classifier
        call for the whole batch."""
        docs = list(docs)
        found = [self.candidate_index(get_entities(doc, self.cfg["spans_key"])) for doc in docs]
        if not any(len(index) for _, index in found):
            return found, None
        scores = self.model.predict((docs, [self._index_pair_array(ents, index) for ents, index in found]))
        return found, self.model.ops.to_numpy(scores)

    def set_annotations(self, docs: Iterable[Doc], predictions) -> None:
        """A pair gets its best label when that beats "no relation", reaches
        ``threshold`` and the label allows the pair's argument types; decided for
        all pairs of the batch at once, Python runs only per relation kept."""
        found, scores = predictions
        labels = self.labels
        ids, _, per_label = self._label_tables()
        unknown = per_label.shape[1] - 1
        offset = 0
        if scores is not None and len(scores):
            scores = numpy.asarray(scores)
            best = scores[:, 1:].argmax(axis=1) + 1
            best_score = scores[numpy.arange(len(scores)), best]
            accept = (best_score >= self.cfg["threshold"]) & (best_score > scores[:, 0])
        for doc, (ents, index) in zip(docs, found):
            relations = []
            n = len(index)
            if n:
                rows = slice(offset, offset + n)
                offset += n
                ent_labels = numpy.asarray([ids.get(e.label_, unknown) for e in ents], dtype="int64")
                ok = accept[rows] & per_label[best[rows] - 1, ent_labels[index[:, 0]], ent_labels[index[:, 1]]]
                for k in numpy.flatnonzero(ok).tolist():
                    a, b = index[k]
                    row = offset - n + k
                    relations.append(make_relation(labels[best[row] - 1], ents[a], ents[b], score=best_score[row]))
            doc._.relations = relations

    # ---- training ----------------------------------------------------------------
    def _gold_pairs(self, example: Example) -> Tuple[List[Tuple[Span, Span]], numpy.ndarray]:
        doc = example.predicted
        gold_keys = {span: key for key, span in gold_entities_on(doc, example.reference, self.cfg["spans_key"]).items()}
        pairs = self.candidates(list(gold_keys))
        gold = {}
        for rel in get_relations(example.reference):
            gold[(tuple(rel["arg1"]), tuple(rel["arg2"]))] = rel["label"]
        label_index = {label: i + 1 for i, label in enumerate(self.labels)}
        truth = numpy.zeros((len(pairs),), dtype="i")
        for i, (a, b) in enumerate(pairs):
            truth[i] = label_index.get(gold.get((gold_keys[a], gold_keys[b])), 0)
        return pairs, truth

    def learn(self, examples: List[Example], drop: float) -> Optional[float]:
        """The candidate pairs of the gold entities, one classifier call with
        dropout ``drop`` (spaCy's ``[training] dropout``)."""
        set_dropout_rate(self.model, drop)
        docs, pair_arrays, truths = [], [], []
        for eg in examples:
            pairs, truth = self._gold_pairs(eg)
            docs.append(eg.predicted)
            pair_arrays.append(self._pair_array(pairs))
            truths.append(truth)
        if not any(len(t) for t in truths):
            return None
        scores, backprop = self.model.begin_update((docs, pair_arrays))
        loss, d_scores = self._loss(scores, numpy.concatenate(truths))
        backprop(d_scores)
        return loss

    def _loss(self, scores: Floats2d, truth: numpy.ndarray) -> Tuple[float, Floats2d]:
        target = self.model.ops.alloc2f(*scores.shape)
        target[self.model.ops.xp.arange(len(truth)), self.model.ops.asarray1i(truth)] = 1.0
        d_scores = (scores - target) / max(1, len(truth))
        probs = self.model.ops.to_numpy(scores)[numpy.arange(len(truth)), truth]
        loss = float(-numpy.log(numpy.clip(probs, 1e-8, 1.0)).mean())
        return loss, d_scores

    def get_loss(self, examples: Iterable[Example], scores) -> Tuple[float, Floats2d]:
        truths = [self._gold_pairs(eg)[1] for eg in examples]
        return self._loss(scores, numpy.concatenate(truths) if truths else numpy.zeros((0,), dtype="i"))

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
        allowed_pairs: Optional[Dict[str, List[List[str]]]] = None,
    ) -> None:
        """Learn labels, allowed argument type pairs and the distance limit from data
        (unless given), then initialise the model on a sample."""
        validate_get_examples(get_examples, "RelationExtractor.initialize")
        observed = _observe_relations(get_examples())
        for label in labels or self.cfg["labels"] or sorted(observed["pairs"]):
            self.add_label(label)
        pairs = allowed_pairs or self.cfg["allowed_pairs"] or observed["pairs"]
        self.cfg["allowed_pairs"] = {k: sorted([list(p) for p in v]) for k, v in pairs.items()}
        if self.cfg["max_token_distance"] is None:
            self.cfg["max_token_distance"] = observed["max_distance"]
        sample_docs, sample_pairs = [], []
        for eg in islice(get_examples(), 10):
            sample_docs.append(eg.predicted)
            sample_pairs.append(self._pair_array(self._gold_pairs(eg)[0]))
        self.check_labels_found("relation labels")
        self.model.get_ref("output_layer").set_dim("nO", len(self.labels) + 1)
        self.model.initialize(X=(sample_docs, sample_pairs))


def _observe_relations(examples: Iterable[Example], quantile: float = 0.99) -> dict:
    """Relation labels with their argument type pairs and a token-distance limit
    covering ``quantile`` of the gold relations (plus a margin)."""
    pairs: Dict[str, set] = {}
    distances = []
    for rel in gold_relations(examples):
        pairs.setdefault(rel.label, set()).add((rel.arg1[2], rel.arg2[2]))
        a, b = rel.span1, rel.span2
        if a is not None and b is not None:
            distances.append(max(0, b.start - a.end, a.start - b.end))
    max_distance = int(numpy.quantile(distances, quantile)) + 5 if distances else 50
    return {"pairs": pairs, "max_distance": max_distance}
