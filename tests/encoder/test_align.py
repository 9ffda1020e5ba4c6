"""The array-based token/wordpiece alignment equals spacy-transformers' own."""
import random

import numpy
import pytest
import spacy
from spacy_transformers.align import get_alignment_via_offset_mapping
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from spacy_transformers.span_getters import configure_strided_spans, get_sent_spans
from transformers import AutoTokenizer

from spacy_softprompt.data.tokenizer import create_clinical_tokenizer  # noqa: F401 (registers)
from spacy_softprompt.encoder.align import alignment_via_offset_mapping

PIECES = ["aspirin", "25mg", "10mg/kg", "q6h", "b.i.d.", "x3", "(po)", "café", "naïve", "—", "  ", "\n", "\r\n",
          "BP:120/80", "pt's", "Dr.", "e.g.", "warfarin-induced", "!!", "1.5", "ml", "½", "µg", "日本", "\t", ".", ","]


def _texts(seed, n=12):
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [rng.choice(PIECES) for _ in range(rng.randint(0, 60))]
        texts.append("".join(w + rng.choice(["", " ", " ", "  ", "\n"]) for w in words))
    return texts


def _same(a, b):
    assert numpy.array_equal(numpy.asarray(a.lengths), numpy.asarray(b.lengths))
    assert numpy.array_equal(numpy.asarray(a.dataXd), numpy.asarray(b.dataXd))


@pytest.fixture(scope="module")
def tokenizer(tiny_megatron):
    return AutoTokenizer.from_pretrained(str(tiny_megatron), use_fast=True)


@pytest.mark.parametrize("lang_tokenizer", ["blank", "clinical"])
@pytest.mark.parametrize("getter", ["strided", "short-strided", "sents"])
def test_alignment_equals_spacy_transformers(tokenizer, lang_tokenizer, getter):
    nlp = spacy.blank("en")
    if lang_tokenizer == "clinical":
        nlp = spacy.blank("en", config={"nlp": {"tokenizer": {"@tokenizers": "spacy_softprompt.ClinicalTokenizer.v1"}}})
    if getter == "sents":
        nlp.add_pipe("sentencizer")
    get_spans = {"strided": configure_strided_spans(24, 18), "short-strided": configure_strided_spans(3, 2),
                 "sents": get_sent_spans}[getter]
    for seed in range(4):
        docs = list(nlp.pipe(_texts(seed)))
        docs.append(docs[0])  # a doc twice in a batch: its tokens are counted once
        spans = [s for doc_spans in get_spans(docs) for s in doc_spans]
        if not spans:
            continue
        enc = huggingface_tokenize(tokenizer, [s.text for s in spans])
        _same(alignment_via_offset_mapping(spans, enc["offset_mapping"]),
              get_alignment_via_offset_mapping(spans, enc["offset_mapping"]))


def test_alignment_of_hand_made_offsets():
    nlp = spacy.blank("en")
    doc = nlp("ab cd  e")  # tokens: ab(0-2) cd(3-5) ' '(6) e(7)
    spans = [doc[0:4], doc[1:4]]
    offsets = numpy.array([
        [[0, 0], [0, 1], [1, 2], [2, 4], [7, 8], [0, 0]],   # [CLS] a b "(space)c" e pad
        [[0, 0], [0, 2], [0, 5], [-3, 1], [4, 9], [0, 0]],  # overlaps, out-of-range offsets
    ])
    _same(alignment_via_offset_mapping(spans, offsets), get_alignment_via_offset_mapping(spans, offsets))
    with pytest.raises(ValueError):
        alignment_via_offset_mapping(spans, offsets[:1])


@pytest.mark.parametrize("seed", range(6))
def test_alignment_of_random_offsets_over_several_docs(seed):
    """Windows of several docs (one doc twice, an empty one) with arbitrary offsets: negative,
    past the window's text, overlapping, empty, ragged rows."""
    rng = numpy.random.default_rng(seed)
    nlp = spacy.blank("en")
    docs = list(nlp.pipe(_texts(seed, n=5) + [""]))
    docs.append(docs[1])
    spans = [s for doc_spans in configure_strided_spans(7, 5)(docs) for s in doc_spans]
    width = 14
    offsets = []
    for span in spans:
        n_chars = span.end_char - span.start_char
        a = rng.integers(-3, n_chars + 4, size=width)
        b = a + rng.integers(-2, 6, size=width)
        offsets.append(numpy.stack([a, b], axis=1))
    _same(alignment_via_offset_mapping(spans, numpy.asarray(offsets)),
          get_alignment_via_offset_mapping(spans, numpy.asarray(offsets)))
    ragged = [o[: rng.integers(0, width + 1)] for o in offsets]
    _same(alignment_via_offset_mapping(spans, ragged), get_alignment_via_offset_mapping(spans, ragged))
