"""Token <-> wordpiece alignment from a fast tokenizer's offset mapping, with
array operations instead of per-token Python objects.

:func:`alignment_via_offset_mapping` returns exactly what
``spacy_transformers.align.get_alignment_via_offset_mapping`` returns (same
``Ragged``: one row per unique token of the batch's docs, in order of first
appearance, holding the sorted indices of its wordpieces in the flattened,
padded wordpiece array), but builds it from token offsets
(``Doc.to_array([IDX, LENGTH])``) and ``numpy.searchsorted`` over each
window's offsets.  spacy-transformers' version makes a Python set per token
and hashes a ``Token`` object per token and window, which made alignment the
largest CPU stage in front of the GPU (see ``benchmarks/gpu_bench.py``).

The rule reproduced: a wordpiece covering characters ``[a, b)`` of a window is
aligned to every token of the window that "claims" one of those characters,
where a token claims its own characters plus the one character after it
unless the next token starts there (spacy-transformers' ``char_to_sp_token``
table, later tokens overwriting earlier ones).
"""
from typing import Dict, List, Sequence

import numpy
from spacy.attrs import IDX, LENGTH
from spacy.tokens import Span
from thinc.types import Ragged


def alignment_via_offset_mapping(spans: Sequence[Span], offset_mapping) -> Ragged:
    """``Ragged`` alignment of the tokens of ``spans``' docs to the wordpieces
    whose character offsets (relative to each span's text) are ``offset_mapping``
    (``[n_spans, n_wordpieces, 2]``, padded rows and special tokens ``(0, 0)``)."""
    if len(spans) != len(offset_mapping):
        raise ValueError("Cannot align batches of different sizes.")
    doc_base: Dict[int, int] = {}
    doc_tokens: Dict[int, numpy.ndarray] = {}
    n_tokens = 0
    for span in spans:
        doc = span.doc
        key = id(doc)
        if key not in doc_base:
            doc_base[key] = n_tokens
            doc_tokens[key] = doc.to_array([IDX, LENGTH]).astype("int64", copy=False).reshape(-1, 2)
            n_tokens += len(doc)
    token_parts: List[numpy.ndarray] = []
    wp_parts: List[numpy.ndarray] = []
    wp_start = 0
    for i, span in enumerate(spans):
        offsets = numpy.asarray(offset_mapping[i], dtype="int64").reshape(-1, 2)
        n_wp = offsets.shape[0]
        if len(span):
            tokens = doc_tokens[id(span.doc)][span.start : span.end]
            span_idx = int(tokens[0, 0])
            starts = tokens[:, 0] - span_idx
            # last claimed character (inclusive): own characters + 1, unless the next token starts there
            ends = starts + tokens[:, 1]
            ends[:-1] = numpy.minimum(ends[:-1], starts[1:] - 1)
            # characters outside the window's table (len(text) + 1 entries) claim nothing
            limit = span.end_char - span.start_char  # len(span.text), without building it
            a, b = offsets[:, 0], offsets[:, 1]
            last = numpy.minimum(b - 1, limit)
            first = numpy.maximum(a, 0)
            lo = numpy.searchsorted(ends, first, side="left")
            hi = numpy.searchsorted(starts, last, side="right") - 1
            count = numpy.where((b > a) & (last >= first), numpy.maximum(hi - lo + 1, 0), 0)
            if count.any():
                wp = numpy.repeat(numpy.arange(n_wp, dtype="int64"), count)
                step = numpy.arange(count.sum(), dtype="int64") - numpy.repeat(numpy.cumsum(count) - count, count)
                rel_token = numpy.repeat(lo, count) + step
                token_parts.append(rel_token + span.start + doc_base[id(span.doc)])
                wp_parts.append(wp + wp_start)
        wp_start += n_wp
    if token_parts:
        token = numpy.concatenate(token_parts)
        wp = numpy.concatenate(wp_parts)
        order = numpy.lexsort((wp, token))
        token, wp = token[order], wp[order]
        keep = numpy.ones(token.shape[0], dtype=bool)
        keep[1:] = (token[1:] != token[:-1]) | (wp[1:] != wp[:-1])
        token, wp = token[keep], wp[keep]
    else:
        token = wp = numpy.zeros((0,), dtype="int64")
    lengths = numpy.bincount(token, minlength=n_tokens).astype("i")
    return Ragged(numpy.ascontiguousarray(wp, dtype="i"), lengths)
