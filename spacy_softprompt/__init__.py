"""spacy-softprompt: prompt-tuned clinical encoders as spaCy pipelines."""
from .about import __version__
from .annotations import ENTITY_SPANS_KEY, get_entities, get_relations, make_relation, set_entities
from .components import token_ner as _token_ner  # noqa: F401  (registers factory and architecture without entry points)

__all__ = [
    "__version__",
    "ENTITY_SPANS_KEY",
    "get_entities",
    "get_relations",
    "make_relation",
    "set_entities",
]
