"""What the package's trainable pipes share: ``token_ner`` and
``relation_extractor`` (:mod:`.heads`), ``mrc_ner`` and ``mrc_relations``
(:mod:`.mrc`).

:class:`HeadPipe` holds a pipe's settings in ``cfg`` (which spaCy's
``TrainablePipe.to_disk`` / ``from_disk`` save and load with the model), its
labels, and the bookkeeping of ``update`` (examples listed and checked, the
loss added under the pipe's name, the optimizer step); a subclass says how one
batch is learnt (:meth:`HeadPipe.learn`).  :func:`gold_entities_on` puts the
gold entities of a reference Doc on the predicted tokens, for training;
:func:`gold_relations` lists the gold relations (with their arguments as
spans) that the relation pipes' ``initialize`` learns from.

Imports nothing of the package but :mod:`.annotations`; :mod:`.heads` and
:mod:`.mrc` both build on this module and never on each other.
"""
from dataclasses import asdict
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model, Optimizer

from .annotations import EntityKey, get_entities, get_relations  # EntityKey: re-exported for heads/ and mrc/


def pipe_settings(arguments: Dict[str, Any]) -> Dict[str, Any]:
    """A factory's arguments as keyword arguments of its pipe's constructor:
    all but ``nlp``, ``name`` and ``model``, with a ``settings`` dataclass
    (:func:`~spacy_softprompt.settings.takes_settings`) spread into its fields.
    Call it with the factory's ``locals()`` before the factory assigns
    anything else, so that the factory's signature (which spaCy validates
    configs against) is the one list of the settings."""
    out = {key: value for key, value in arguments.items() if key not in ("nlp", "name", "model", "settings")}
    if "settings" in arguments:
        out.update(asdict(arguments["settings"]))
    return out


def gold_entities_on(doc: Doc, source: Doc, spans_key: str) -> Dict[EntityKey, Span]:
    """Entities of ``source`` (the reference) as spans of ``doc`` (the predicted
    tokens, widened to token edges), keyed by their gold ``(start_char,
    end_char, label)``; entities that cover no token of ``doc`` are left out."""
    spans = {}
    for ent in get_entities(source, spans_key):
        span = doc.char_span(ent.start_char, ent.end_char, label=ent.label_, alignment_mode="expand")
        if span is not None and len(span) > 0:
            spans[(ent.start_char, ent.end_char, ent.label_)] = span
    return spans


class GoldRelation(NamedTuple):
    """A gold relation of a training example, as ``initialize`` reads it."""

    example: int  #: position of the example in the stream
    label: str
    arg1: EntityKey  #: ``(start_char, end_char, label)``
    arg2: EntityKey
    span1: Optional[Span]  #: ``arg1`` on the reference's tokens (widened); None when it covers none
    span2: Optional[Span]


def gold_relations(examples: Iterable[Example]) -> Iterator[GoldRelation]:
    """Every relation of the examples' reference docs, with its arguments as spans."""
    for n, eg in enumerate(examples):
        ref = eg.reference
        for rel in get_relations(ref):
            arg1, arg2 = tuple(rel["arg1"]), tuple(rel["arg2"])
            yield GoldRelation(
                n,
                rel["label"],
                arg1,
                arg2,
                ref.char_span(arg1[0], arg1[1], alignment_mode="expand"),
                ref.char_span(arg2[0], arg2[1], alignment_mode="expand"),
            )


class HeadPipe(TrainablePipe):
    """A trainable pipe with labels in ``cfg["labels"]``; subclasses implement
    ``predict``, ``set_annotations``, ``initialize``, ``get_loss`` and :meth:`learn`."""

    #: added to the error of :meth:`add_label` after initialisation
    late_label_note = ""

    def __init__(
        self, vocab: Vocab, model: Model, name: str, cfg: Dict[str, Any], scorer: Optional[Callable] = None
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg = cfg

    # ---- labels -------------------------------------------------------------------
    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    def is_initialized(self) -> bool:
        """True once the model's output size is set: labels are fixed from then on."""
        return self.model.get_ref("output_layer").has_dim("nO") is True

    def add_label(self, label: str) -> int:
        if label in self.cfg["labels"]:
            return 0
        if self.is_initialized():
            raise ValueError(f"Cannot add labels to '{self.name}' after it was initialised{self.late_label_note}.")
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    def check_labels_found(self, what: str = "labels") -> None:
        """Raise when ``initialize`` found no labels (none given, none in the data)."""
        if not self.labels:
            raise ValueError(f"'{self.name}': no {what} were given and none are in the training data.")

    # ---- training -----------------------------------------------------------------
    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from one batch (:meth:`learn`), step the optimizer and add the
        loss to ``losses[self.name]``; a batch with nothing to learn from
        changes nothing."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_get_examples(lambda: examples, f"{type(self).__name__}.update")
        loss = self.learn(examples, drop)
        if loss is None:
            return losses
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def learn(self, examples: List[Example], drop: float) -> Optional[float]:
        """Forward and backward on one batch (gradients accumulate in the model);
        returns the loss, or None when the batch has nothing to learn from."""
        raise NotImplementedError
