"""spacy-softprompt: prompt-tuned clinical encoders as spaCy pipelines."""
from .about import __version__
from .annotations import ENTITY_SPANS_KEY, get_entities, get_relations, make_relation, set_entities
from .heads import token_ner as _token_ner  # noqa: F401  (registers factory and architecture without entry points)
from .memory import retain_freed_memory
from .parallel import install_fork_guard

# nlp.pipe(n_process=N) forks: a forked child must not use torch's inherited thread pool.
install_fork_guard()

__all__ = [
    "__version__",
    "ENTITY_SPANS_KEY",
    "get_entities",
    "get_relations",
    "make_relation",
    "retain_freed_memory",
    "set_entities",
]
