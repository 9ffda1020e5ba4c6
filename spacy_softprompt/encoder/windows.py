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
from typing import Callable, Iterable, List, Tuple

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
        ends = [sent.end for sent in doc.sents]
    else:
        ends = []
        for i in range(len(doc) - 1):
            if _ends_sentence(doc, i):
                if ends and ends[-1] == i and doc[i].is_space:  # a line break after a sentence end joins it
                    ends[-1] = i + 1
                else:
                    ends.append(i + 1)
        ends.append(len(doc))
    return ends


def _ends_sentence(doc: Doc, i: int) -> bool:
    token = doc[i]
    if "\n" in token.whitespace_ or (token.is_space and "\n" in token.text):
        return True
    if token.text not in SENTENCE_FINAL:
        return False
    following = doc[i + 1]
    if following.is_space:
        return "\n" in following.text
    first = following.text[0]
    return bool(token.whitespace_) and (first.isupper() or first.isdigit())


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
