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
from typing import Dict, List, Sequence, Tuple

import numpy
from spacy.attrs import IDX, LENGTH
from spacy.tokens import Span
from thinc.types import Ragged


def alignment_via_offset_mapping(spans: Sequence[Span], offset_mapping) -> Ragged:
    """``Ragged`` alignment of the tokens of ``spans``' docs to the wordpieces
    whose character offsets (relative to each span's text) are ``offset_mapping``
    (``[n_spans, n_wordpieces, 2]``, padded rows and special tokens ``(0, 0)``).

    All windows at once: each wordpiece's character range is moved into its
    doc's coordinates (docs laid end to end, apart), so two ``searchsorted``
    calls over the batch's tokens find the first and last token it touches,
    clipped to its window's tokens."""
    if len(spans) != len(offset_mapping):
        raise ValueError("Cannot align batches of different sizes.")
    doc_index: Dict[int, int] = {}
    doc_arrays: List[numpy.ndarray] = []
    span_list: List[Tuple[int, int, int]] = []  # doc, start, end
    for span in spans:
        doc = span.doc
        d = doc_index.get(id(doc))
        if d is None:
            d = doc_index[id(doc)] = len(doc_arrays)
            doc_arrays.append(doc.to_array([IDX, LENGTH]).astype("int64", copy=False).reshape(-1, 2))
        span_list.append((d, span.start, span.end))
    token_counts = numpy.asarray([a.shape[0] for a in doc_arrays], dtype="int64")
    doc_lengths = [int(a[-1].sum()) if a.shape[0] else 0 for a in doc_arrays]  # last token's end
    n_tokens = int(token_counts.sum())
    offsets, wp_per_span = _flat_offsets(offset_mapping)
    if n_tokens == 0 or int(wp_per_span.sum()) == 0:
        return Ragged(numpy.zeros((0,), dtype="i"), numpy.zeros((n_tokens,), dtype="i"))
    # the batch's tokens end to end; doc d's characters are shifted by char_base[d] (docs 2 apart)
    doc_first = numpy.cumsum(token_counts) - token_counts
    char_base = numpy.cumsum([0] + [n + 2 for n in doc_lengths[:-1]]).astype("int64")
    tokens = numpy.concatenate(doc_arrays)
    token_doc = numpy.repeat(numpy.arange(len(doc_arrays)), token_counts)
    starts = tokens[:, 0] + char_base[token_doc]
    ends_raw = starts + tokens[:, 1]  # a token claims its own characters plus the next one ...
    ends = ends_raw.copy()  # ... unless the next token (of its doc) starts there
    same_doc = token_doc[1:] == token_doc[:-1]
    ends[:-1] = numpy.where(same_doc, numpy.minimum(ends_raw[:-1], starts[1:] - 1), ends_raw[:-1])
    # every window: its doc, its first and last token, its characters
    span_rows = numpy.asarray(span_list, dtype="int64").reshape(-1, 3)
    doc, begin, end = span_rows[:, 0], span_rows[:, 1], span_rows[:, 2]
    nonempty = end > begin
    first_token = begin + doc_first[doc]
    last_token = numpy.maximum(end + doc_first[doc] - 1, first_token)  # = first_token if empty
    # a window's text runs from its first token's start to its last token's end
    start_char = numpy.where(nonempty, tokens[numpy.minimum(first_token, n_tokens - 1), 0], 0)
    end_char = numpy.where(nonempty, tokens[numpy.minimum(last_token, n_tokens - 1)].sum(axis=1), 0)
    shift = start_char + char_base[doc]
    last_claim = ends_raw[numpy.minimum(last_token, n_tokens - 1)]  # the window's last token claims one more
    # ... and per wordpiece
    wp_span = numpy.repeat(numpy.arange(len(spans)), wp_per_span)
    first_token, last_token, last_claim = first_token[wp_span], last_token[wp_span], last_claim[wp_span]
    shift, limit, nonempty = shift[wp_span], (end_char - start_char)[wp_span], nonempty[wp_span]
    a, b = offsets[:, 0], offsets[:, 1]
    first = numpy.maximum(a, 0) + shift
    last = numpy.minimum(b - 1, limit) + shift  # characters past the window's text claim nothing
    valid = (b > a) & (last >= first) & nonempty
    lo = numpy.clip(numpy.searchsorted(ends, first, side="left"), first_token, last_token)
    lo += (lo == last_token) & (last_claim < first)
    hi = numpy.minimum(numpy.searchsorted(starts, last, side="right") - 1, last_token)
    count = numpy.where(valid, numpy.maximum(hi - lo + 1, 0), 0)
    total = int(count.sum())
    if total:
        wp = numpy.repeat(numpy.arange(offsets.shape[0], dtype="int64"), count)
        token = numpy.repeat(lo, count) + numpy.arange(total, dtype="int64") - numpy.repeat(numpy.cumsum(count) - count, count)
        order = numpy.argsort(token, kind="stable")  # wp ascends already: pairs sorted by (token, wp)
        token, wp = token[order], wp[order]
        keep = numpy.ones(total, dtype=bool)
        keep[1:] = (token[1:] != token[:-1]) | (wp[1:] != wp[:-1])
        token, wp = token[keep], wp[keep]
    else:
        token = wp = numpy.zeros((0,), dtype="int64")
    lengths = numpy.bincount(token, minlength=n_tokens).astype("i")
    return Ragged(numpy.ascontiguousarray(wp, dtype="i"), lengths)


def _flat_offsets(offset_mapping) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """``(offsets [n, 2], wordpieces per window)``: the windows' offsets end to end
    (rows may differ in length)."""
    if isinstance(offset_mapping, numpy.ndarray) and offset_mapping.ndim == 3:
        n_spans, n_wp = offset_mapping.shape[:2]
        return offset_mapping.astype("int64", copy=False).reshape(-1, 2), numpy.full(n_spans, n_wp, dtype="int64")
    rows = [numpy.asarray(row, dtype="int64").reshape(-1, 2) for row in offset_mapping]
    counts = numpy.asarray([row.shape[0] for row in rows], dtype="int64")
    return (numpy.concatenate(rows) if rows else numpy.zeros((0, 2), dtype="int64")), counts
