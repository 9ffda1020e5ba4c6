"""Single-pass heads on the transformer's listener: ``token_ner`` (BILUO concepts) and ``relation_extractor`` (entity pairs), their networks and decoding.
Registered through the ``spacy_factories`` / ``spacy_architectures`` entry points: configs and saved pipelines name them, not these modules.
May import spaCy, thinc, numpy, :mod:`..annotations`, :mod:`..pipe_base` and :mod:`..scoring`; never :mod:`..mrc` nor :mod:`..encoder`."""
from .relation_extractor import RelationExtractor, make_relation_extractor
from .relation_model import create_relation_model_v1
from .token_ner import TokenEntityRecognizer, make_token_ner
from .token_ner_model import create_token_ner_model_v1

__all__ = [
    "RelationExtractor",
    "make_relation_extractor",
    "create_relation_model_v1",
    "TokenEntityRecognizer",
    "make_token_ner",
    "create_token_ner_model_v1",
]
