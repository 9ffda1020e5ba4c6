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
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.util import registry
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer
from thinc.types import Floats2d

from ..annotations import ENTITY_SPANS_KEY, get_entities, get_relations, make_relation

NO_RELATION = "_NONE_"

DEFAULT_REL_MODEL = """
[model]
@architectures = "spacy_softprompt.RelationModel.v1"
hidden_width = 256
distance_width = 16
dropout = 0.1

[model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""


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
    default_score_weights={
        "rels_strict_f": 1.0,
        "rels_strict_p": 0.0,
        "rels_strict_r": 0.0,
        "rels_lenient_f": 0.0,
        "ents_strict_f": 0.0,
        "ents_lenient_f": 0.0,
        "ents_per_type": None,
        "rels_per_type": None,
    },
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
    return RelationExtractor(
        nlp.vocab,
        model,
        name,
        spans_key=spans_key,
        labels=labels,
        allowed_pairs=allowed_pairs,
        max_token_distance=max_token_distance,
        threshold=threshold,
        scorer=scorer,
    )


class RelationExtractor(TrainablePipe):
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
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg = {
            "spans_key": spans_key,
            "labels": list(labels or []),
            "allowed_pairs": {k: [list(p) for p in v] for k, v in (allowed_pairs or {}).items()},
            "max_token_distance": max_token_distance,
            "threshold": threshold,
        }

    # ---- labels and candidates -------------------------------------------------
    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    def add_label(self, label: str) -> int:
        if label in self.cfg["labels"]:
            return 0
        self._allow_resize()
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    def _allow_resize(self) -> None:
        if self.model.get_ref("output_layer").has_dim("nO") is True:
            raise ValueError(f"Cannot add labels to '{self.name}' after it was initialised.")

    @property
    def _allowed_type_pairs(self) -> set:
        return {tuple(pair) for pairs in self.cfg["allowed_pairs"].values() for pair in pairs}

    def candidates(self, doc: Doc, entities: Sequence[Span]) -> List[Tuple[Span, Span]]:
        """Ordered entity pairs allowed by type and distance. Entities are sorted by
        start, and the scan stops once the next start is farther than the distance
        limit, so the cost grows with entities × neighbours, not entities²."""
        allowed = self._allowed_type_pairs
        max_dist = self.cfg["max_token_distance"]
        ents = sorted(entities, key=lambda s: (s.start, s.end, s.label_))
        pairs = []
        for i, a in enumerate(ents):
            for b in ents[i + 1 :]:
                if max_dist is not None and b.start - a.end > max_dist:
                    break  # later entities start even farther away
                if a.start == b.start and a.end == b.end and a.label_ == b.label_:
                    continue
                if (a.label_, b.label_) in allowed:
                    pairs.append((a, b))
                if (b.label_, a.label_) in allowed:
                    pairs.append((b, a))
        return pairs

    def _pair_array(self, pairs: List[Tuple[Span, Span]]) -> numpy.ndarray:
        arr = numpy.zeros((len(pairs), 4), dtype="i")
        for i, (a, b) in enumerate(pairs):
            arr[i] = (a.start, a.end, b.start, b.end)
        return arr

    def _entities_on(self, doc: Doc, source: Doc) -> Dict[Span, Tuple[int, int, str]]:
        """Entities of ``source`` (gold) as spans of ``doc`` (the predicted tokens,
        widened to token edges), each with its gold (start, end, label) key."""
        spans = {}
        for ent in get_entities(source, self.cfg["spans_key"]):
            span = doc.char_span(ent.start_char, ent.end_char, label=ent.label_, alignment_mode="expand")
            if span is not None and len(span) > 0:
                spans[span] = (ent.start_char, ent.end_char, ent.label_)
        return spans

    # ---- prediction --------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]):
        docs = list(docs)
        pairs = [self.candidates(doc, get_entities(doc, self.cfg["spans_key"])) for doc in docs]
        if not any(pairs):
            return pairs, None
        scores = self.model.predict((docs, [self._pair_array(p) for p in pairs]))
        return pairs, self.model.ops.to_numpy(scores)

    def set_annotations(self, docs: Iterable[Doc], predictions) -> None:
        pairs_per_doc, scores = predictions
        offset = 0
        labels = self.labels
        for doc, pairs in zip(docs, pairs_per_doc):
            relations = []
            for a, b in pairs:
                row = scores[offset]
                offset += 1
                best = int(row[1:].argmax()) + 1
                if row[best] >= self.cfg["threshold"] and row[best] > row[0]:
                    label = labels[best - 1]
                    if [a.label_, b.label_] in self.cfg["allowed_pairs"].get(label, []):
                        relations.append(make_relation(label, a, b, score=row[best]))
            doc._.relations = relations

    # ---- training ----------------------------------------------------------------
    def _gold_pairs(self, example: Example) -> Tuple[List[Tuple[Span, Span]], numpy.ndarray]:
        doc = example.predicted
        gold_keys = self._entities_on(doc, example.reference)
        pairs = self.candidates(doc, list(gold_keys))
        gold = {}
        for rel in get_relations(example.reference):
            gold[(tuple(rel["arg1"]), tuple(rel["arg2"]))] = rel["label"]
        label_index = {label: i + 1 for i, label in enumerate(self.labels)}
        truth = numpy.zeros((len(pairs),), dtype="i")
        for i, (a, b) in enumerate(pairs):
            truth[i] = label_index.get(gold.get((gold_keys[a], gold_keys[b])), 0)
        return pairs, truth

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
        validate_get_examples(lambda: examples, "RelationExtractor.update")
        docs, pair_arrays, truths = [], [], []
        for eg in examples:
            pairs, truth = self._gold_pairs(eg)
            docs.append(eg.predicted)
            pair_arrays.append(self._pair_array(pairs))
            truths.append(truth)
        if not any(len(t) for t in truths):
            return losses
        scores, backprop = self.model.begin_update((docs, pair_arrays))
        loss, d_scores = self._loss(scores, numpy.concatenate(truths))
        backprop(d_scores)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

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
        observed = _observe_relations(get_examples(), self.cfg["spans_key"])
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
        if not self.labels:
            raise ValueError(f"'{self.name}': no relation labels were given and none are in the training data.")
        self.model.get_ref("output_layer").set_dim("nO", len(self.labels) + 1)
        self.model.initialize(X=(sample_docs, sample_pairs))


def _observe_relations(examples: Iterable[Example], spans_key: str, quantile: float = 0.99) -> dict:
    """Relation labels with their argument type pairs and a token-distance limit
    covering ``quantile`` of the gold relations (plus a margin)."""
    pairs: Dict[str, set] = {}
    distances = []
    for eg in examples:
        ref = eg.reference
        for rel in get_relations(ref):
            (s1, e1, l1), (s2, e2, l2) = rel["arg1"], rel["arg2"]
            pairs.setdefault(rel["label"], set()).add((l1, l2))
            a = ref.char_span(s1, e1, alignment_mode="expand")
            b = ref.char_span(s2, e2, alignment_mode="expand")
            if a is not None and b is not None:
                distances.append(max(0, b.start - a.end, a.start - b.end))
    max_distance = int(numpy.quantile(distances, quantile)) + 5 if distances else 50
    return {"pairs": pairs, "max_distance": max_distance}
