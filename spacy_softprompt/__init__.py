"""spacy-softprompt: prompt-tuned clinical encoders as spaCy pipelines."""
from .about import __version__
from .annotations import ENTITY_SPANS_KEY, get_entities, get_relations, make_relation, set_entities

__all__ = [
    "__version__",
    "ENTITY_SPANS_KEY",
    "get_entities",
    "get_relations",
    "make_relation",
    "set_entities",
]
