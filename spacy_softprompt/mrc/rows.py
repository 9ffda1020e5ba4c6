"""Query rows for the MRC components: wordpieces of Docs, windows, row tensors.

A *row* is one encoder input: ``[CLS] query [SEP] context [SEP]`` (hard
questions, or the head mention of a relation query) or ``[CLS] context [SEP]``
(a per-label soft prompt and no query text); which prompt a row uses is its
``prompt_id``.  The *context* is a run of whole spaCy tokens of one Doc.  Rows
remember, per wordpiece, the token it belongs to (``word_index``) and whether
it is the first / last piece of that token (``start_mask`` / ``end_mask``),
so spans decoded from a row map back to token spans and can never start or end
inside a word.

Everything here is numpy: the model converts an :class:`MRCRows` to tensors.
"""
import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy
from spacy.tokens import Doc

#: Longest wordpiece run kept for one spaCy token (first pieces + last piece);
#: a pathological token (a 300-character URL) must not eat a whole window.
MAX_WORD_PIECES = 16


# ------------------------------------------------------------------ layout
@dataclass(frozen=True)
class SpecialLayout:
    """Where a tokenizer puts its special tokens around one or two segments."""

    single_prefix: Tuple[int, ...]
    single_suffix: Tuple[int, ...]
    pair_prefix: Tuple[int, ...]
    pair_middle: Tuple[int, ...]
    pair_suffix: Tuple[int, ...]
    text_type: int
    pad_id: int

    @property
    def n_single(self) -> int:
        return len(self.single_prefix) + len(self.single_suffix)

    @property
    def n_pair(self) -> int:
        return len(self.pair_prefix) + len(self.pair_middle) + len(self.pair_suffix)

    @classmethod
    def from_tokenizer(cls, tokenizer, type_vocab_size: int = 2) -> "SpecialLayout":
        specials = set(tokenizer.all_special_ids)
        probes = list(itertools.islice((i for i in range(len(tokenizer)) if i not in specials), 2))
        if len(probes) < 2:
            raise ValueError("tokenizer has fewer than two ordinary tokens")
        a, b = probes
        single = list(tokenizer.build_inputs_with_special_tokens([a]))
        pair = list(tokenizer.build_inputs_with_special_tokens([a], [b]))
        if single.count(a) != 1 or pair.count(a) != 1 or pair.count(b) != 1:
            raise ValueError(f"cannot find the special token layout of {type(tokenizer).__name__}")
        ia, ib = pair.index(a), pair.index(b)
        try:
            types = list(tokenizer.create_token_type_ids_from_sequences([a], [b]))
            text_type = int(types[ib])
        except Exception:  # noqa: BLE001 - tokenizers without token types
            text_type = 0
        text_type = min(max(text_type, 0), max(int(type_vocab_size or 0) - 1, 0))
        pad = tokenizer.pad_token_id
        return cls(
            single_prefix=tuple(single[: single.index(a)]),
            single_suffix=tuple(single[single.index(a) + 1 :]),
            pair_prefix=tuple(pair[:ia]),
            pair_middle=tuple(pair[ia + 1 : ib]),
            pair_suffix=tuple(pair[ib + 1 :]),
            text_type=text_type,
            pad_id=int(pad if pad is not None else 0),
        )


# ------------------------------------------------------------------ pieces
@dataclass
class DocPieces:
    """The wordpieces of one Doc's tokens (no specials)."""

    ids: numpy.ndarray  # [n_pieces] int64
    piece_word: numpy.ndarray  # [n_pieces] token index of each piece
    word_start: numpy.ndarray  # [n_tokens] first piece of each token
    word_end: numpy.ndarray  # [n_tokens] one past its last piece (== start: no pieces)

    @property
    def n_words(self) -> int:
        return len(self.word_start)

    @property
    def counts(self) -> numpy.ndarray:
        return self.word_end - self.word_start

    def first_last(self) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """Per piece: is it its token's first / last piece."""
        p = numpy.arange(len(self.ids))
        return p == self.word_start[self.piece_word], p == self.word_end[self.piece_word] - 1

    def pieces_of(self, start: int, end: int) -> numpy.ndarray:
        """Piece ids of tokens ``start .. end - 1``."""
        if end <= start:
            return self.ids[:0]
        return self.ids[self.word_start[start] : self.word_end[end - 1]]


def _doc_pieces(word_ids: Sequence[Optional[int]], ids: Sequence[int], n_words: int, max_word_pieces: int) -> DocPieces:
    ids_arr = numpy.asarray(ids, dtype="int64")
    words = numpy.asarray([-1 if w is None else w for w in word_ids], dtype="int64")
    keep = words >= 0
    ids_arr, words = ids_arr[keep], words[keep]
    counts = numpy.bincount(words, minlength=n_words) if len(words) else numpy.zeros(n_words, dtype="int64")
    if len(words) and counts.max() > max_word_pieces:
        first = numpy.concatenate([[0], numpy.cumsum(counts)[:-1]])
        rank = numpy.arange(len(words)) - first[words]
        n = counts[words]
        keep = (rank < max_word_pieces - 1) | (rank == n - 1)
        ids_arr, words = ids_arr[keep], words[keep]
        counts = numpy.bincount(words, minlength=n_words)
    ends = numpy.cumsum(counts).astype("int64")
    starts = ends - counts
    return DocPieces(ids=ids_arr, piece_word=words, word_start=starts, word_end=ends)


def tokenize_docs(tokenizer, docs: Sequence[Doc], max_word_pieces: int = MAX_WORD_PIECES) -> List[DocPieces]:
    """Wordpieces of every token of every Doc, one batched tokenizer call."""
    out: List[Optional[DocPieces]] = [None] * len(docs)
    words, index = [], []
    for i, doc in enumerate(docs):
        if len(doc):
            words.append([t.text for t in doc])
            index.append(i)
        else:
            empty = numpy.zeros((0,), dtype="int64")
            out[i] = DocPieces(empty, empty, empty, empty)
    if words:
        enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
        for b, i in enumerate(index):
            out[i] = _doc_pieces(enc.word_ids(b), enc["input_ids"][b], len(docs[i]), max_word_pieces)
    return out  # type: ignore[return-value]


def tokenize_queries(tokenizer, texts: Sequence[str], max_pieces: int) -> List[numpy.ndarray]:
    """Piece ids (no specials) of query texts, each cut to ``max_pieces``."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False, verbose=False)
    return [numpy.asarray(ids[:max_pieces], dtype="int64") for ids in enc["input_ids"]]


# ----------------------------------------------------------------- windows
def token_windows(counts: numpy.ndarray, budget: int, overlap: int) -> List[Tuple[int, int]]:
    """Windows ``[start, end)`` of tokens whose pieces fit ``budget``; neighbouring
    windows share up to ``overlap`` tokens.  Every token is in some window."""
    n = len(counts)
    if n == 0:
        return []
    budget = max(int(budget), 1)
    cum = numpy.concatenate([[0], numpy.cumsum(counts)])
    windows = []
    start = 0
    while start < n:
        end = int(numpy.searchsorted(cum, cum[start] + budget, side="right")) - 1
        end = min(max(end, start + 1), n)
        windows.append((start, end))
        if end >= n:
            break
        start = max(start + 1, end - max(int(overlap), 0))
    return windows


def window_owners(windows: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """The tokens each window is responsible for: overlaps are cut in the middle,
    so a span found by two windows is kept from the one that sees it centrally."""
    owners = []
    for k, (a, b) in enumerate(windows):
        lo = 0 if k == 0 else (a + windows[k - 1][1]) // 2
        hi = b if k == len(windows) - 1 else (windows[k + 1][0] + b) // 2
        owners.append((lo, max(hi, lo)))
    return owners


# -------------------------------------------------------------------- rows
@dataclass
class RowSpec:
    """One query row before padding."""

    doc: int
    prompt_id: int
    query: numpy.ndarray  # query piece ids ([] = no query segment)
    ctx_start: int  # first context token
    ctx_end: int  # one past the last context token
    owner: Tuple[int, int] = (0, 1 << 60)  # tokens whose spans this row reports
    key: Tuple = ()  # free bookkeeping (label, head entity ...)
    mark: Tuple[int, int] = (0, 0)  # context tokens given the query's token type (a relation's head)


@dataclass
class MRCRows:
    """A padded batch of query rows (numpy) plus what maps rows back to Docs."""

    input_ids: numpy.ndarray  # [R, L] int64
    attention_mask: numpy.ndarray  # [R, L] int64
    token_type_ids: numpy.ndarray  # [R, L] int64
    prompt_ids: numpy.ndarray  # [R] int64
    word_index: numpy.ndarray  # [R, L] int64, token index of context pieces, -1 elsewhere
    start_mask: numpy.ndarray  # [R, L] bool
    end_mask: numpy.ndarray  # [R, L] bool
    specs: List[RowSpec] = field(default_factory=list)
    word_pos: List[Dict[str, numpy.ndarray]] = field(default_factory=list)
    gold: numpy.ndarray = field(default_factory=lambda: numpy.zeros((0, 3), dtype="int64"))
    options: Dict = field(default_factory=dict)  # decoding / loss options for the model

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1]) if self.input_ids.ndim == 2 else 0

    def positions(self, row: int, start_token: int, end_token: int) -> Optional[Tuple[int, int]]:
        """Row positions of the first piece of ``start_token`` and the last piece
        of ``end_token - 1`` (None when the span is not inside the row's context
        or a boundary token has no wordpieces)."""
        spec = self.specs[row]
        if start_token < spec.ctx_start or end_token > spec.ctx_end or end_token <= start_token:
            return None
        pos = self.word_pos[row]
        s, e = int(pos["first"][start_token - spec.ctx_start]), int(pos["last"][end_token - 1 - spec.ctx_start])
        if s < 0 or e < 0:
            return None
        return s, e

    def select(self, rows: numpy.ndarray) -> "MRCRows":
        """A sub-batch (gold re-indexed), trimmed to its longest row."""
        rows = numpy.asarray(rows, dtype="int64")
        width = int(self.attention_mask[rows].sum(1).max()) if len(rows) else 0
        index = {int(r): k for k, r in enumerate(rows)}
        gold = self.gold
        if len(gold):
            keep = numpy.isin(gold[:, 0], rows)
            gold = gold[keep].copy()
            gold[:, 0] = [index[int(r)] for r in gold[:, 0]]
        return MRCRows(
            input_ids=self.input_ids[rows, :width],
            attention_mask=self.attention_mask[rows, :width],
            token_type_ids=self.token_type_ids[rows, :width],
            prompt_ids=self.prompt_ids[rows],
            word_index=self.word_index[rows, :width],
            start_mask=self.start_mask[rows, :width],
            end_mask=self.end_mask[rows, :width],
            specs=[self.specs[r] for r in rows],
            word_pos=[self.word_pos[r] for r in rows],
            gold=gold,
            options=dict(self.options),
        )


def _ids(values) -> numpy.ndarray:
    return numpy.asarray(list(values), dtype="int64")


def build_rows(specs: Sequence[RowSpec], pieces: Sequence[DocPieces], layout: SpecialLayout) -> MRCRows:
    """Pad and assemble rows: ``prefix query middle context suffix`` (or
    ``prefix context suffix`` without a query), token types 0 / text type."""
    R = len(specs)
    parts = []
    firsts_lasts = [p.first_last() if p.n_words else (None, None) for p in pieces]
    for spec in specs:
        doc = pieces[spec.doc]
        p0 = int(doc.word_start[spec.ctx_start]) if spec.ctx_end > spec.ctx_start else 0
        p1 = int(doc.word_end[spec.ctx_end - 1]) if spec.ctx_end > spec.ctx_start else 0
        ctx = doc.ids[p0:p1]
        if len(spec.query):
            head = numpy.concatenate(
                [_ids(layout.pair_prefix), numpy.asarray(spec.query, dtype="int64"), _ids(layout.pair_middle)]
            )
            tail = _ids(layout.pair_suffix)
            text_type = layout.text_type
        else:
            head = _ids(layout.single_prefix)
            tail = _ids(layout.single_suffix)
            text_type = 0
        parts.append((head, ctx, tail, p0, p1, text_type))
    L = max((len(h) + len(c) + len(t) for h, c, t, *_ in parts), default=0)
    input_ids = numpy.full((R, L), layout.pad_id, dtype="int64")
    attention = numpy.zeros((R, L), dtype="int64")
    types = numpy.zeros((R, L), dtype="int64")
    word_index = numpy.full((R, L), -1, dtype="int64")
    start_mask = numpy.zeros((R, L), dtype=bool)
    end_mask = numpy.zeros((R, L), dtype=bool)
    word_pos = []
    for r, (spec, (head, ctx, tail, p0, p1, text_type)) in enumerate(zip(specs, parts)):
        doc = pieces[spec.doc]
        h, c = len(head), len(ctx)
        n = h + c + len(tail)
        input_ids[r, :n] = numpy.concatenate([head, ctx, tail])
        attention[r, :n] = 1
        types[r, h:n] = text_type
        n_tok = spec.ctx_end - spec.ctx_start
        first = numpy.full((n_tok,), -1, dtype="int64")
        last = numpy.full((n_tok,), -1, dtype="int64")
        if c:
            is_first, is_last = firsts_lasts[spec.doc]
            word_index[r, h : h + c] = doc.piece_word[p0:p1]
            start_mask[r, h : h + c] = is_first[p0:p1]
            end_mask[r, h : h + c] = is_last[p0:p1]
            m0, m1 = max(spec.mark[0], spec.ctx_start), min(spec.mark[1], spec.ctx_end)
            if m1 > m0 and len(spec.query):
                q0, q1 = int(doc.word_start[m0]) - p0 + h, int(doc.word_end[m1 - 1]) - p0 + h
                types[r, q0:q1] = 0
            tokens = numpy.arange(spec.ctx_start, spec.ctx_end)
            has = doc.word_end[tokens] > doc.word_start[tokens]
            first[has] = doc.word_start[tokens[has]] - p0 + h
            last[has] = doc.word_end[tokens[has]] - 1 - p0 + h
        word_pos.append({"first": first, "last": last})
    return MRCRows(
        input_ids=input_ids,
        attention_mask=attention,
        token_type_ids=types,
        prompt_ids=numpy.asarray([s.prompt_id for s in specs], dtype="int64"),
        word_index=word_index,
        start_mask=start_mask,
        end_mask=end_mask,
        specs=list(specs),
        word_pos=word_pos,
    )


def context_around(
    counts: numpy.ndarray, lo: int, hi: int, head_start: int, head_end: int, budget: int
) -> Tuple[int, int]:
    """The widest token range inside ``[lo, hi)`` that contains the head
    ``[head_start, head_end)`` as centrally as possible and fits ``budget``
    pieces (the head itself is cut from the right when it alone is too long)."""
    cum = numpy.concatenate([[0], numpy.cumsum(counts)])
    lo, hi = min(lo, head_start), max(hi, head_end)
    if cum[hi] - cum[lo] <= budget:
        return lo, hi
    head_pieces = cum[head_end] - cum[head_start]
    if head_pieces >= budget:
        end = int(numpy.searchsorted(cum, cum[head_start] + budget, side="right")) - 1
        return head_start, max(end, head_start + 1)
    spare = budget - head_pieces
    left_have = cum[head_start] - cum[lo]
    right_have = cum[hi] - cum[head_end]
    left = min(left_have, spare // 2)
    right = min(right_have, spare - left)
    left = min(left_have, spare - right)
    # leftmost start whose pieces up to head_start fit `left`
    start = int(numpy.searchsorted(cum, cum[head_start] - left, side="left"))
    end = int(numpy.searchsorted(cum, cum[head_end] + right, side="right")) - 1
    return max(start, lo), min(max(end, head_end), hi)
