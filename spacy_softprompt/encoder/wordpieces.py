"""The wordpiece batch of a list of window texts, without per-wordpiece Python.

:func:`wordpiece_batch` returns what ``spacy_transformers``'
``huggingface_tokenize`` + ``WordpieceBatch.from_batch_encoding`` return (same
arrays, strings and lengths) plus the offset mapping, by one of two paths:

* **chunk cache** (BERT WordPiece tokenizers: ``BertNormalizer`` +
  ``BertPreTokenizer`` + ``WordPiece``, right padding): a BERT tokenizer never
  lets a piece cross a space, tab or line break, and its normalisation is
  character-local, so a window's wordpieces are its whitespace-separated
  chunks' wordpieces laid end to end. Each distinct chunk is tokenized once
  (by the same Rust tokenizer, cache misses batched) and kept with its ids and
  offsets; a window is then the special tokens around its chunks' cached
  pieces. Windows overlap and notes repeat their words, so most chunks are
  hits. A batch whose text contains an added token's content (``[SEP]``,
  ``[MASK]``, ...) takes the other path.
* **direct**: the tokenizer's own batch call; strings from the Rust encodings
  and lengths from the id array, not one Python step per wordpiece.

``tests/encoder/test_wordpieces.py`` pins the cache to the direct call.
"""
import json
import re
import weakref
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy
from spacy_transformers.data_classes import WordpieceBatch
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from transformers import PreTrainedTokenizerFast

#: Characters every BERT normaliser and pre-tokenizer treats as a word separator.
_CHUNK = re.compile(r"[^ \t\n\r]+")
#: Whitespace ``str.split`` splits on besides those four: where a text has none,
#: ``text.split()`` gives the chunks of :data:`_CHUNK` (faster than ``findall``).
_OTHER_SPACE = re.compile(r"[\x0b\x0c\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
#: Distinct chunks kept per tokenizer; the cache is emptied when it is full.
MAX_CACHED_CHUNKS = 100_000  # about 45 MB (≈ 430 bytes per chunk on clinical notes)

_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class ChunkCache:
    """Wordpiece ids and chunk-relative character offsets of whitespace-free chunks.

    Chunk ``i``'s pieces are ``ids[first[i] : first[i] + count[i]]`` (and the same
    rows of ``edges``) in flat arrays, so a batch is assembled by array gathers,
    not one Python step per chunk or wordpiece.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast):
        self.tokenizer = tokenizer
        probe = tokenizer(["a"], add_special_tokens=True)["input_ids"][0]
        bare = tokenizer(["a"], add_special_tokens=False)["input_ids"][0]
        at = probe.index(bare[0])
        self.prefix, self.suffix = probe[:at], probe[at + len(bare):]
        self.pad_id = int(tokenizer.pad_token_id)
        self.added = sorted({str(t.content) for t in tokenizer.added_tokens_decoder.values() if str(t.content)})
        self.strings = numpy.asarray(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=object)
        self.with_type_ids = "token_type_ids" in tokenizer.model_input_names
        self.clear()

    def clear(self) -> None:
        """Forget every chunk."""
        self.chunks: Dict[str, int] = {}  # chunk -> its index in first / count
        self._ids = numpy.zeros(1024, dtype="int64")
        self._edges = numpy.zeros((1024, 2), dtype="int64")
        self._first = numpy.zeros(1024, dtype="int64")
        self._count = numpy.zeros(1024, dtype="int64")
        self._n_pieces = 0

    def covers(self, texts: Sequence[str]) -> bool:
        """``False`` when a text holds an added token (the tokenizer matches those first)."""
        return not any(token in text for text in texts for token in self.added)

    def _fill(self, missing: List[str]) -> None:
        """Tokenize the missing chunks in one call (joined by spaces) and store their pieces."""
        starts = numpy.cumsum([0] + [len(chunk) + 1 for chunk in missing[:-1]])
        encoded = self.tokenizer(" ".join(missing), add_special_tokens=False, return_offsets_mapping=True,
                                 return_attention_mask=False, return_token_type_ids=False, verbose=False)
        ids = numpy.asarray(encoded["input_ids"], dtype="int64")
        offsets = numpy.asarray(encoded["offset_mapping"], dtype="int64").reshape(-1, 2)
        owner = numpy.searchsorted(starts, offsets[:, 0], side="right") - 1
        bounds = numpy.searchsorted(owner, numpy.arange(len(missing) + 1), side="left")
        n_chunks, n_pieces = len(self.chunks), self._n_pieces
        self._ids = _grown(self._ids, n_pieces + len(ids))
        self._edges = _grown(self._edges, n_pieces + len(ids))
        self._first = _grown(self._first, n_chunks + len(missing))
        self._count = _grown(self._count, n_chunks + len(missing))
        self._ids[n_pieces : n_pieces + len(ids)] = ids
        self._edges[n_pieces : n_pieces + len(ids)] = offsets - starts[owner][:, None]
        self._first[n_chunks : n_chunks + len(missing)] = n_pieces + bounds[:-1]
        self._count[n_chunks : n_chunks + len(missing)] = numpy.diff(bounds)
        self._n_pieces = n_pieces + len(ids)
        self.chunks.update(zip(missing, range(n_chunks, n_chunks + len(missing))))

    def _indices(self, chunks: List[str]) -> numpy.ndarray:
        """Each chunk's index, tokenizing the ones not seen yet (the cache starts again when full)."""
        distinct = set(chunks)
        missing = sorted(distinct.difference(self.chunks))  # sorted: the same indices on every run
        if missing:
            if len(self.chunks) + len(missing) > MAX_CACHED_CHUNKS:
                self.clear()
                missing = sorted(distinct)
            self._fill(missing)
        return numpy.fromiter(map(self.chunks.__getitem__, chunks), dtype="int64", count=len(chunks))

    def batch(self, texts: Sequence[str]) -> Tuple[Dict[str, numpy.ndarray], WordpieceBatch]:
        n_rows = len(texts)
        # the batch's chunks in order, with their row and their start in the row's text
        joined = "\n".join(texts)
        chunks = _CHUNK.findall(joined) if _OTHER_SPACE.search(joined) else joined.split()
        points = numpy.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        space = (points == 32) | (points == 9) | (points == 10) | (points == 13)
        chunk_starts = numpy.flatnonzero(~space & numpy.concatenate(([True], space[:-1])))
        text_starts = numpy.cumsum([0] + [len(text) + 1 for text in texts[:-1]]).astype("int64")
        chunk_row = numpy.searchsorted(text_starts, chunk_starts, side="right") - 1
        index = self._indices(chunks)
        counts = self._count[index]
        # every row: prefix, its chunks' pieces end to end, suffix
        n_prefix, n_suffix = len(self.prefix), len(self.suffix)
        text_pieces = numpy.bincount(chunk_row, weights=counts, minlength=n_rows).astype("int64")
        row_lengths = text_pieces + n_prefix + n_suffix
        lengths = row_lengths.tolist()
        width = max(lengths, default=0)
        # each piece: where it comes from in the flat arrays, its row and its column
        total = int(counts.sum())
        ends = numpy.cumsum(counts)
        within = numpy.arange(total) - numpy.repeat(ends - counts, counts)
        source = numpy.repeat(self._first[index], counts) + within
        piece_row = numpy.repeat(chunk_row, counts)
        row_piece_start = numpy.cumsum(text_pieces) - text_pieces
        piece_col = numpy.arange(total) - row_piece_start[piece_row] + n_prefix
        input_ids = numpy.full((n_rows, width), self.pad_id, dtype="int64")
        offset_mapping = numpy.zeros((n_rows, width, 2), dtype="int64")
        attention_mask = (numpy.arange(width)[None, :] < row_lengths[:, None]).astype("float32")
        input_ids[piece_row, piece_col] = self._ids[source]
        shift = numpy.repeat(chunk_starts - text_starts[chunk_row], counts)
        offset_mapping[piece_row, piece_col] = self._edges[source] + shift[:, None]
        rows = numpy.arange(n_rows)
        for k, special in enumerate(self.prefix):
            input_ids[rows, k] = special
        for k, special in enumerate(self.suffix):
            input_ids[rows, row_lengths - n_suffix + k] = special
        batch = WordpieceBatch(
            strings=self.strings[input_ids].tolist(),  # padded rows, as spacy-transformers' strings
            input_ids=input_ids,
            attention_mask=attention_mask,
            lengths=lengths,
            token_type_ids=numpy.zeros_like(input_ids) if self.with_type_ids else None,
        )
        return {"offset_mapping": offset_mapping}, batch


def _grown(array: numpy.ndarray, size: int) -> numpy.ndarray:
    """``array`` itself when it holds ``size`` rows, else a copy with room for twice that."""
    if array.shape[0] >= size:
        return array
    grown = numpy.zeros((2 * size,) + array.shape[1:], dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


def _is_bert_wordpiece(tokenizer) -> bool:
    if not isinstance(tokenizer, PreTrainedTokenizerFast) or tokenizer.pad_token_id is None:
        return False
    if getattr(tokenizer, "padding_side", "right") != "right":
        return False
    try:
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
    except Exception:  # a backend that cannot describe itself takes the direct path
        return False
    kinds = {part: (spec.get(part) or {}).get("type") for part in ("normalizer", "pre_tokenizer", "model", "post_processor")}
    return (
        kinds["normalizer"] == "BertNormalizer"
        and kinds["pre_tokenizer"] == "BertPreTokenizer"
        and kinds["model"] == "WordPiece"
        and kinds["post_processor"] in ("TemplateProcessing", "BertProcessing")
    )


def chunk_cache(tokenizer) -> Optional[ChunkCache]:
    """The tokenizer's :class:`ChunkCache`, or ``None`` when it is not a BERT WordPiece tokenizer."""
    try:
        return _CACHES[tokenizer]
    except KeyError:
        cache = ChunkCache(tokenizer) if _is_bert_wordpiece(tokenizer) else None
        _CACHES[tokenizer] = cache
        return cache
    except TypeError:  # not weak-referenceable
        return None


def direct_wordpiece_batch(tokenizer, texts: Sequence[str]) -> Tuple[Mapping, WordpieceBatch]:
    """The tokenizer's own batch call (with offsets when it is fast)."""
    texts = list(texts)
    if not isinstance(tokenizer, PreTrainedTokenizerFast) or tokenizer.pad_token_id is None:
        encoding = huggingface_tokenize(tokenizer, texts)
        return encoding, WordpieceBatch.from_batch_encoding(encoding)
    encoding = tokenizer(
        texts,
        add_special_tokens=True,
        return_attention_mask=True,
        return_offsets_mapping=True,
        return_tensors="np",
        return_token_type_ids=None,
        padding="longest",
    )
    strings: List[List[str]] = [list(row.tokens) for row in encoding.encodings]
    input_ids = encoding["input_ids"]
    lengths = (input_ids != tokenizer.pad_token_id).sum(axis=1).astype(int).tolist()
    token_type_ids = encoding.get("token_type_ids")
    batch = WordpieceBatch(
        strings=strings,
        input_ids=numpy.ascontiguousarray(input_ids),
        attention_mask=numpy.asarray(encoding["attention_mask"], dtype="float32"),
        lengths=lengths,
        token_type_ids=None if token_type_ids is None else numpy.ascontiguousarray(token_type_ids),
    )
    return encoding, batch


def wordpiece_batch(tokenizer, texts: Sequence[str]) -> Tuple[Mapping, WordpieceBatch]:
    """``(mapping with "offset_mapping" when the tokenizer is fast, WordpieceBatch)``."""
    texts = list(texts)
    cache = chunk_cache(tokenizer) if texts else None
    if cache is not None and cache.covers(texts):
        return cache.batch(texts)
    return direct_wordpiece_batch(tokenizer, texts)
