"""medspaCy wiring: clinical sentence splitting before the transformer, ConText
(negation, historical, hypothetical, family, uncertain) and section detection
after concept extraction.

medspaCy registers its factories only when ``medspacy`` is imported and has no
entry points, so a packaged pipeline naming ``medspacy_context`` fails to load
elsewhere. These two factories are ours (entry points), import medspaCy lazily,
save nothing but their settings and never touch the tokenizer: medspaCy's own
``medspacy_tokenizer`` would change tokenization under a trained model.
"""
import logging
from typing import Optional

from spacy.language import Language
from spacy.pipeline import Sentencizer
from spacy.tokens import Doc

from .annotations import ENTITY_SPANS_KEY

logger = logging.getLogger(__name__)

CONTEXT_ATTRIBUTES = ("is_negated", "is_historical", "is_hypothetical", "is_family", "is_uncertain")


def _require_medspacy():
    try:
        import medspacy  # noqa: F401
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "This pipeline uses medspaCy components: pip install 'spacy-softprompt[clinical]' "
            "(medspacy 1.3.1 needs spaCy < 3.8)."
        ) from err
    _silence_sentence_splitter_logs()


def _silence_sentence_splitter_logs() -> None:
    """PyRuSH logs every token at DEBUG through loguru: note text must not reach logs."""
    try:
        from loguru import logger as loguru_logger

        loguru_logger.disable("PyRuSH")
    except ImportError:  # pragma: no cover
        pass


@Language.factory("clinical_sentences", assigns=["token.is_sent_start"], requires=[])
def make_clinical_sentences(nlp: Language, name: str, max_sentence_length: Optional[int] = None):
    """medspaCy's PyRuSH clinical sentence splitter (rule based, no training)."""
    _require_medspacy()
    return ClinicalSentences(nlp, name, max_sentence_length=max_sentence_length)


class _RuleBasedPipe:
    """Nothing learned: rules come from medspaCy's resources, settings from the config."""

    def pipe(self, docs, batch_size: int = 128):
        for doc in docs:
            yield self(doc)

    def to_disk(self, path, exclude=tuple()):
        return None

    def from_disk(self, path, exclude=tuple()):
        return self

    def to_bytes(self, exclude=tuple()) -> bytes:
        return b""

    def from_bytes(self, data: bytes, exclude=tuple()):
        return self


class ClinicalSentences(_RuleBasedPipe):
    """PyRuSH sentence boundaries (PyRuSH's own class cannot be serialised by spaCy)."""

    def __init__(self, nlp: Language, name: str, *, max_sentence_length: Optional[int] = None):
        from medspacy.sentence_splitting import PyRuSHSentencizer

        self.name = name
        self.splitter = PyRuSHSentencizer(nlp, name=name, max_sentence_length=max_sentence_length)

    def __call__(self, doc: Doc) -> Doc:
        return self.splitter(doc)


@Language.factory(
    "clinical_context",
    assigns=[f"span._.{attr}" for attr in CONTEXT_ATTRIBUTES] + ["span._.section_category"],
    requires=["doc.ents"],
    default_config={"spans_key": ENTITY_SPANS_KEY, "sections": True, "max_scope": None},
)
def make_clinical_context(nlp: Language, name: str, spans_key: str, sections: bool, max_scope: Optional[int]):
    """ConText and (optionally) section detection over the extracted concepts."""
    _require_medspacy()
    return ClinicalContext(nlp, name, spans_key=spans_key, sections=sections, max_scope=max_scope)


class ClinicalContext(_RuleBasedPipe):
    """Runs medspaCy's ConText (and Sectionizer) over ``doc.spans[spans_key]``,
    filling that group from ``doc.ents`` when an upstream NER set only those.
    Without upstream sentence boundaries, a punctuation sentencizer sets them."""

    def __init__(self, nlp: Language, name: str, *, spans_key: str, sections: bool, max_scope: Optional[int]):
        from medspacy.context import ConText
        from medspacy.section_detection import Sectionizer

        self.name = name
        self.spans_key = spans_key
        self.context = ConText(
            nlp, name=f"{name}_context", input_span_type="group", span_group_name=spans_key, max_scope=max_scope
        )
        self.fallback_sentences = Sentencizer()
        self.sectionizer = (
            Sectionizer(nlp, name=f"{name}_sections", input_span_type="group", span_group_name=spans_key)
            if sections
            else None
        )

    def __call__(self, doc: Doc) -> Doc:
        if self.spans_key not in doc.spans:
            doc.spans[self.spans_key] = list(doc.ents)
        if not doc.has_annotation("SENT_START"):
            doc = self.fallback_sentences(doc)
        if self.sectionizer is not None:
            doc = self.sectionizer(doc)
        return self.context(doc)
