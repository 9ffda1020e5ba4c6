"""Helpers for the MRC tests (imported by name; this module holds no tests).

Tiny pipelines over the random encoders of ``spacy_softprompt.testing``; every
MRC test module runs torch on one thread (much faster for tiny models on a
busy machine) and restores the setting afterwards.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example

from spacy_softprompt.annotations import make_relation, set_entities
from spacy_softprompt.mrc.model import mrc_module

# (text, [(label, surface, occurrence)]); relations: attribute -> first Drug of the text
TOY = [
    ("aspirin 10 mg daily for fever", [("Drug", "aspirin"), ("Strength", "10 mg"), ("Frequency", "daily")]),
    ("heparin 5 ml twice after surgery", [("Drug", "heparin"), ("Strength", "5 ml"), ("Frequency", "twice")]),
    ("warfarin 2 mg daily was held", [("Drug", "warfarin"), ("Strength", "2 mg"), ("Frequency", "daily")]),
]
# nested entities of one type: "insulin" inside "insulin injection"
NESTED = [
    ("insulin injection daily", [("Drug", "insulin injection"), ("Drug", "insulin"), ("Frequency", "daily")]),
    ("metformin tablets bid", [("Drug", "metformin tablets"), ("Drug", "metformin"), ("Frequency", "bid")]),
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_config(path, **kwargs) -> Dict:
    cfg = {"name": str(path), "prompt_length": 4, "prompt_depth": "deep", "init_seed": 0, "hidden_width": 32}
    cfg.update(kwargs)
    return cfg


def make_nlp(path, *, ner: Optional[Dict] = None, rel: Optional[Dict] = None, model: Optional[Dict] = None, sentencizer=False):
    """A blank pipeline with ``mrc_ner`` (``ner`` settings) and/or ``mrc_relations``."""
    nlp = spacy.blank("en")
    if sentencizer:
        nlp.add_pipe("sentencizer")
    model = model or {}
    if ner is not None:
        nlp.add_pipe("mrc_ner", config={"model": model_config(path, **model), **ner})
    if rel is not None:
        nlp.add_pipe("mrc_relations", config={"model": model_config(path, **model), **rel})
    return nlp


def char_spans(text: str, ents: Sequence[Tuple[str, str]]) -> List[Tuple[int, int, str]]:
    out, used = [], set()
    for label, surface in ents:
        start = text.index(surface)
        while (start, label, surface) in used:
            start = text.index(surface, start + 1)
        used.add((start, label, surface))
        out.append((start, start + len(surface), label))
    return out


def reference(nlp, text: str, ents, with_relations=True) -> Doc:
    doc = nlp.make_doc(text)
    spans = [doc.char_span(s, e, label=l) for s, e, l in char_spans(text, ents)]
    set_entities(doc, spans)
    if with_relations:
        drug = next(s for s in spans if s.label_ == "Drug")
        doc._.relations = [make_relation(f"{s.label_}-Drug", s, drug) for s in spans if s.label_ != "Drug"]
    return doc


def examples(nlp, data=TOY, with_relations=True) -> List[Example]:
    return [Example(nlp.make_doc(t), reference(nlp, t, e, with_relations)) for t, e in data]


def gold_entities(data=TOY):
    return [sorted(char_spans(t, e)) for t, e in data]


def entity_keys(doc) -> List[Tuple[int, int, str]]:
    return sorted((s.start_char, s.end_char, s.label_) for s in doc.spans["entities"])


def relation_keys(doc):
    return sorted((r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in doc._.relations)


def module_of(nlp, name):
    return mrc_module(nlp.get_pipe(name).model)


def state_copy(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class ForwardCounter:
    """Counts encoder forward calls and the rows each one got."""

    def __init__(self, encoder: torch.nn.Module):
        self.calls: List[Tuple[int, int]] = []
        self.inputs: List[torch.Tensor] = []
        self.prompt_ids: List[torch.Tensor] = []
        self.handle = encoder.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        self.calls.append(tuple(ids.shape))
        self.inputs.append(ids.detach().clone())
        self.prompt_ids.append(kwargs.get("prompt_ids"))

    def close(self):
        self.handle.remove()

    @property
    def rows(self) -> int:
        return sum(shape[0] for shape in self.calls)
