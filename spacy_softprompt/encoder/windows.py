"""Sentence-aligned windows: each token encoded once, windows cut between sentences.

``spacy-transformers.strided_spans.v1`` with ``stride < window`` encodes the
tokens of every overlap twice (128 / 112: +14% of the forward); with
``stride == window`` it encodes each token once but cuts wherever the count
falls, often inside a sentence, so the tokens on both sides of a cut lose
their context. ``spacy_softprompt.sentence_windows.v1`` also encodes each token
once, but packs whole sentences into each window (up to ``window`` tokens) and
cuts a sentence only when it alone is longer than a window.

Sentences are the Doc's own when a component before the transformer set them
(``clinical_sentences``, a ``sentencizer``); otherwise a cheap rule marks a
sentence end after a line break and after ``.``, ``?`` or ``!`` followed by a
line break or by whitespace and a capital letter or digit. The rule needs no
model and never changes the tokens; at worst it cuts where a sentencizer
would not, which only moves a window boundary.
"""
from functools import partial
from typing import Callable, Dict, Iterable, List, Tuple

import numpy
from spacy.attrs import ORTH, SPACY
from spacy.tokens import Doc, Span
from spacy_transformers.util import registry

SpanGetter = Callable[[Iterable[Doc]], List[List[Span]]]
SENTENCE_FINAL = frozenset({".", "?", "!"})


@registry.span_getters("spacy_softprompt.sentence_windows.v1")
def configure_sentence_windows(window: int = 128) -> SpanGetter:
    """Non-overlapping windows of whole sentences, at most ``window`` tokens each."""
    if window < 1:
        raise ValueError(f"sentence_windows: window must be >= 1 token, got {window}")
    return partial(sentence_windows, window=window)


def sentence_windows(docs: Iterable[Doc], window: int) -> List[List[Span]]:
    """Per Doc, consecutive spans covering every token exactly once, each of at most ``window`` tokens."""
    return [[doc[start:end] for start, end in pack_sentences(sentence_ends(doc), window)] for doc in docs]


def sentence_ends(doc: Doc) -> List[int]:
    """Exclusive end offsets of the Doc's sentences, ascending, the last one ``len(doc)``."""
    if len(doc) == 0:
        return []
    if doc.has_annotation("SENT_START"):
        return [sent.end for sent in doc.sents]
    return rule_sentence_ends(doc)


def rule_sentence_ends(doc: Doc) -> List[int]:
    """Sentence ends by the rule, from per-token arrays (no Python loop over tokens).

    spaCy keeps line breaks in whitespace tokens (``token.whitespace_`` is
    ``""`` or ``" "``), so a sentence ends after a whitespace token holding a
    line break, and after ``.`` ``?`` ``!`` followed by such a token or by a
    space and a token starting with a capital or a digit. Line breaks right
    after a sentence end join that sentence.
    """
    attrs = doc.to_array([ORTH, SPACY])
    orths, unique_index = numpy.unique(attrs[:, 0], return_inverse=True)
    cache, strings = _FLAGS_BY_ORTH, doc.vocab.strings
    if len(cache) > _FLAGS_CACHE_SIZE:
        cache.clear()
    flags = numpy.array([cache.get(orth) or _cache_flags(orth, strings) for orth in orths.tolist()], dtype=numpy.uint8)
    flags = flags[unique_index.reshape(-1)]
    line_break = (flags & _LINE_BREAK) > 0
    final = (flags & _FINAL) > 0
    opens = (flags & _OPENS) > 0
    ends = line_break.copy()
    ends[:-1] |= final[:-1] & (line_break[1:] | ((attrs[:-1, 1] > 0) & opens[1:]))
    ends[:-1] &= ~line_break[1:]  # a line break right after an end takes the end over
    ends[-1] = True
    return (numpy.flatnonzero(ends) + 1).tolist()


_LINE_BREAK, _FINAL, _OPENS, _KNOWN = 1, 2, 4, 8  # _KNOWN: never 0, so a cached entry is truthy
_FLAGS_BY_ORTH: Dict[int, int] = {}  # ORTH hashes are the same in every vocab
_FLAGS_CACHE_SIZE = 1 << 20


def _cache_flags(orth: int, strings) -> int:
    flags = _FLAGS_BY_ORTH[orth] = _text_flags(strings[orth]) | _KNOWN
    return flags


def _text_flags(text: str) -> int:
    flags = 0
    if text.isspace() and "\n" in text:
        flags |= _LINE_BREAK
    if text in SENTENCE_FINAL:
        flags |= _FINAL
    if text[:1].isupper() or text[:1].isdigit():
        flags |= _OPENS
    return flags


def pack_sentences(ends: List[int], window: int) -> List[Tuple[int, int]]:
    """``(start, end)`` windows: whole sentences packed greedily, long sentences cut every ``window`` tokens."""
    windows = []
    start = previous = 0
    for end in ends:
        if end - start > window and previous > start:  # the sentence does not fit: close the window before it
            windows.append((start, previous))
            start = previous
        while end - start > window:  # a sentence longer than a window on its own
            windows.append((start, start + window))
            start += window
        previous = end
    if previous > start:
        windows.append((start, previous))
    return windows
