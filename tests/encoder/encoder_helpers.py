"""Helpers for the encoder tests: tiny spaCy pipelines over the random encoders.

(Imported by name: tests folders are not packages here.)
"""
from typing import Any, Dict, List

import spacy
import torch
from spacy.training import Example

import spacy_softprompt.architectures  # noqa: F401  (registers; entry points are tested separately)
import spacy_softprompt.optimizers  # noqa: F401

ARCH = "spacy_softprompt.SoftPromptTransformerModel.v1"

TEXTS = [
    "patient was given 5 mg of aspirin daily for pain",
    "heparin was stopped after rash",
    "no nausea",
    "metformin 500 mg po bid with insulin before meals and warfarin",
]
DRUGS = ["aspirin", "heparin", "metformin", "insulin", "warfarin"]


def _drug_spans(text):
    spans = []
    for drug in DRUGS:
        start = text.find(drug)
        if start >= 0:
            spans.append((start, start + len(drug), "DRUG"))
    return sorted(spans)


ENTITIES = [_drug_spans(t) for t in TEXTS]


def model_config(path, *, arch: str = ARCH, window: int = 32, stride: int = 24, **kwargs) -> Dict[str, Any]:
    cfg: Dict[str, Any] = {
        "@architectures": arch,
        "name": str(path),
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": window, "stride": stride},
        "tokenizer_config": {"use_fast": True},
    }
    if arch == ARCH:
        cfg.setdefault("init_seed", 0)
    cfg.update(kwargs)
    return cfg


def make_nlp(path, *, ner: bool = False, arch: str = ARCH, window: int = 32, stride: int = 24, **kwargs):
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": model_config(path, arch=arch, window=window, stride=stride, **kwargs)})
    if ner:
        nlp.add_pipe(
            "ner",
            config={
                "model": {
                    "@architectures": "spacy.TransitionBasedParser.v2",
                    "state_type": "ner",
                    "extra_state_tokens": False,
                    "hidden_width": 16,
                    "maxout_pieces": 2,
                    "use_upper": False,
                    "nO": None,
                    "tok2vec": {
                        "@architectures": "spacy-transformers.TransformerListener.v1",
                        "grad_factor": 1.0,
                        "pooling": {"@layers": "reduce_mean.v1"},
                        "upstream": "*",
                    },
                }
            },
        )
    return nlp


def examples(nlp) -> List[Example]:
    return [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in zip(TEXTS, ENTITIES)]


def initialize(nlp):
    egs = examples(nlp)
    nlp.initialize(lambda: egs)
    return egs


def hidden(doc):
    """The transformer output of a doc, ``[n_windows, L, H]`` numpy."""
    return doc._.trf_data.model_output.last_hidden_state


def encoder_of(nlp):
    return nlp.get_pipe("transformer").model.encoder


def state_copy(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
