"""Helpers for the reliability suite: the shipped single-pass pipeline (the default
concept head, ``token_ner``) on a tiny random encoder, and checks that a processed Doc still points into its input.

(Imported by name: tests folders are not packages here.)
"""
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config

from spacy_softprompt.annotations import get_entities, get_relations
from spacy_softprompt.testing import toy_docs

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
#: the default concept head (token_ner) with a frozen deep prompt (P=5 since 2026-12-05)
DEFAULT_CONFIG = "tok_soft-frozen_cpu.cfg"

#: windows that fit the tiny encoder's 128 positions next to a prompt of up to P=20
TINY_WINDOW = {
    "components.transformer.model.get_spans.window": 48,
    "components.transformer.model.get_spans.stride": 40,
}


def pipeline_config(backbone, config: str = DEFAULT_CONFIG, **overrides: Any):
    """A shipped config (``configs/<config>``) pointed at ``backbone``; ``overrides``
    use spaCy's dotted names (``components.transformer.model.prompt_depth``)."""
    values: Dict[str, Any] = {"paths.backbone": str(backbone), **TINY_WINDOW}
    values.update(overrides)
    return load_config(CONFIGS / config, overrides=values, interpolate=True)


def build_pipeline(backbone, config: str = DEFAULT_CONFIG, seed: int = 0, **overrides: Any):
    """transformer + token_ner + relation_extractor from a shipped config, initialised
    on the toy docs (untrained: the heads predict arbitrary spans, which is what
    the offset checks want)."""
    fix_random_seed(seed)
    nlp = load_model_from_config(pipeline_config(backbone, config, **overrides), auto_fill=True, validate=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    return nlp


def check_doc_matches_text(doc, text: str) -> int:
    """Assert every offset the pipeline produced points into ``text`` exactly;
    returns the number of entities checked."""
    assert doc.text == text
    for token in doc:
        assert text[token.idx : token.idx + len(token.text)] == token.text
    assert "".join(t.text_with_ws for t in doc) == text
    checked = 0
    entities = list(doc.ents) + get_entities(doc)
    for ent in entities:
        assert 0 <= ent.start_char <= ent.end_char <= len(text)
        assert text[ent.start_char : ent.end_char] == ent.text
        checked += 1
    keys = {(e.start_char, e.end_char, e.label_) for e in entities}
    for rel in get_relations(doc):
        for arg in (rel["arg1"], rel["arg2"]):
            start, end, label = arg
            assert 0 <= start <= end <= len(text)
            assert (start, end, label) in keys, f"relation argument {arg} is not an entity of the doc"
    if len(doc):
        trf = doc._.trf_data
        assert len(trf.align.lengths) == len(doc)
    return checked


def innermost_frame(err: BaseException) -> Optional[traceback.FrameSummary]:
    frames = traceback.extract_tb(err.__traceback__)
    return frames[-1] if frames else None


def assert_raised_by_us(err: BaseException, *allowed: str) -> None:
    """The exception was raised in our code or a config validator, not deep inside
    torch/transformers, and it is not chained to a torch error."""
    frame = innermost_frame(err)
    assert frame is not None
    where = frame.filename.replace("\\", "/")
    allowed = allowed or ("spacy_softprompt/",)
    assert any(a in where for a in allowed), f"raised at {where}:{frame.lineno}, not in {allowed}"
    cause = err.__cause__ or err.__context__
    while cause is not None:
        last = innermost_frame(cause)
        if last is not None:
            assert "/torch/" not in last.filename, f"chained to a torch error at {last.filename}"
        cause = cause.__cause__ or cause.__context__


def assert_no_excerpt_longer_than(blob: str, secret: str, limit: int = 40) -> None:
    """No run of more than ``limit`` characters of ``secret`` appears in ``blob``."""
    assert len(secret) > limit
    for start in range(len(secret) - limit):
        piece = secret[start : start + limit + 1]
        assert piece not in blob, f"{limit + 1}+ characters of the note leaked: {piece!r}"
