"""Sentence-aligned windows (spacy_softprompt.sentence_windows.v1)."""
import importlib.metadata

import pytest
import spacy
from hypothesis import given
from hypothesis import strategies as st
from spacy_transformers.util import registry

from encoder_helpers import initialize, model_config
from spacy_softprompt.encoder.windows import (
    configure_sentence_windows,
    pack_sentences,
    rule_sentence_ends,
    sentence_ends,
    sentence_windows,
)


@st.composite
def _sentence_ends(draw):
    lengths = draw(st.lists(st.integers(1, 40), min_size=0, max_size=25))
    ends, total = [], 0
    for n in lengths:
        total += n
        ends.append(total)
    return ends


@given(_sentence_ends(), st.integers(1, 30))
def test_windows_cover_each_token_once_and_cut_between_sentences(ends, window):
    windows = pack_sentences(ends, window)
    n = ends[-1] if ends else 0
    covered = [i for start, end in windows for i in range(start, end)]
    assert covered == list(range(n))  # every token once, in order
    assert all(0 < end - start <= window for start, end in windows)
    boundaries = set(ends) | {0}
    for start, end in windows:
        if end not in boundaries:  # only inside a sentence longer than a window
            sentence_start = max(b for b in boundaries if b < end)
            sentence_end = min(b for b in boundaries if b > end)
            assert sentence_end - sentence_start > window
    # greedy: a window and the next whole sentence would not have fit together
    for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
        if end in boundaries and next_start == end:
            first_sentence_end = min(b for b in ends if b > end)
            assert first_sentence_end - start > window


def test_rule_cuts_after_line_breaks_and_sentence_final_punctuation():
    nlp = spacy.blank("en")
    doc = nlp("Pain on day 3. Given aspirin 5 mg.\nRash noted e.g. on arm. 2 days later fine")
    tokens = [t.text for t in doc]
    ends = sentence_ends(doc)
    starts = [0] + ends[:-1]
    assert [doc[a:b].text_with_ws for a, b in zip(starts, ends)] == [
        "Pain on day 3. ",  # a capital follows
        "Given aspirin 5 mg.\n",  # a line break follows: it stays with its sentence
        "Rash noted e.g. on arm. ",  # a digit follows; "e.g." is no sentence end
        "2 days later fine",
    ]
    assert "e.g." in tokens  # an abbreviation stays inside its sentence


def _reference_rule_ends(doc):
    """The rule token by token (what ``rule_sentence_ends`` computes from arrays)."""
    ends = []
    for i, token in enumerate(doc):
        if i == len(doc) - 1:
            end = True
        elif token.is_space:
            end = "\n" in token.text
        elif token.text in {".", "?", "!"}:
            following = doc[i + 1]
            end = (following.is_space and "\n" in following.text) or (
                bool(token.whitespace_) and not following.is_space
                and (following.text[0].isupper() or following.text[0].isdigit()))
        else:
            end = False
        if end:
            if ends and ends[-1] == i and token.is_space and "\n" in token.text:
                ends[-1] = i + 1  # a line break right after an end joins that sentence
            else:
                ends.append(i + 1)
    return ends


PIECES = ["Pain", "on", "day", "3", ".", "?", "!", "\n", "\n\n", "  ", "e.g.", "Dr.", "mg", "2", "(", ")", "x",
          "Heparin", "é", "ÉCG", "½"]


@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=40), st.lists(st.booleans(), min_size=40, max_size=40))
def test_rule_from_arrays_equals_the_rule_token_by_token(pieces, spaces):
    nlp = spacy.blank("en")
    text = "".join(p + (" " if sp else "") for p, sp in zip(pieces, spaces))
    doc = nlp(text)
    if len(doc) == 0:
        return
    assert rule_sentence_ends(doc) == _reference_rule_ends(doc)


def test_doc_sentences_are_used_when_set():
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    doc = nlp("one two three . four five six seven . eight")
    assert sentence_ends(doc) == [s.end for s in doc.sents] == [4, 9, 10]
    windows = sentence_windows([doc], window=6)[0]
    assert [(w.start, w.end) for w in windows] == [(0, 4), (4, 10)]


def test_empty_doc_and_long_sentence():
    nlp = spacy.blank("en")
    assert sentence_windows([nlp("")], window=4) == [[]]
    doc = nlp("a b c d e f g h i j")
    assert [(w.start, w.end) for w in sentence_windows([doc], window=4)[0]] == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="window must be >= 1"):
        configure_sentence_windows(0)


def test_registered_and_exposed_as_entry_point():
    assert registry.span_getters.get("spacy_softprompt.sentence_windows.v1") is configure_sentence_windows
    names = {ep.name for ep in importlib.metadata.entry_points(group="spacy_span_getters")}
    assert "spacy_softprompt.sentence_windows.v1" in names


def test_pipeline_with_sentence_windows_encodes_each_token_once(tiny_bert):
    cfg = model_config(tiny_bert)
    cfg["get_spans"] = {"@span_getters": "spacy_softprompt.sentence_windows.v1", "window": 8}
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": cfg})
    initialize(nlp)
    doc = nlp("Aspirin was given. Rash on day 2.\nHeparin stopped after the rash was seen by the team today")
    trf = doc._.trf_data
    windows = sentence_windows([doc], window=8)[0]
    assert len(trf.model_output.last_hidden_state) == len(windows)
    # no token in two windows: each token aligns to the wordpieces of exactly one row
    rows_per_token = []
    width = trf.model_output.last_hidden_state.shape[1]
    for i in range(len(doc)):
        pieces = trf.align[i].data.ravel()
        rows_per_token.append({int(p) // width for p in pieces})
    assert all(len(rows) <= 1 for rows in rows_per_token)
    assert sum(1 for rows in rows_per_token if rows) >= len(doc) - 1  # whitespace tokens may have no wordpiece


_WORDS = st.sampled_from(["Aspirin", "81", "mg", "daily", ".", ",", "\n", "  ", "\t", "BP", "140/90", "é", "(", ")"])


@given(st.lists(st.lists(_WORDS, min_size=0, max_size=60), min_size=1, max_size=4), st.integers(1, 20), st.integers(1, 20))
def test_window_texts_equal_span_text(notes, window, stride):
    """The encoder slices each window's text from its doc's text: always the window's ``Span.text``
    (whitespace tokens, trailing spaces, empty docs, overlapping and non-overlapping windows)."""
    from spacy.tokens import Doc
    from spacy_transformers.span_getters import configure_strided_spans

    from spacy_softprompt.encoder.layer import window_texts

    nlp = spacy.blank("en")
    docs = [nlp.make_doc(" ".join(words)) for words in notes]
    docs.append(Doc(nlp.vocab, words=["no", "space", "after"], spaces=[False, True, True]))
    nested = configure_strided_spans(window, min(stride, window))(docs)
    assert window_texts(docs, nested) == [span.text for spans in nested for span in spans]
    # a span of another doc than the one it is listed under: its own text, not a slice of the wrong doc
    swapped = [nested[-1], nested[0]] + nested[2:] if len(nested) > 1 else nested
    assert window_texts(docs, swapped) == [span.text for spans in swapped for span in spans]
