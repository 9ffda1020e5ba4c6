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
#: Distinct chunks kept per tokenizer; the cache is emptied when it is full.
MAX_CACHED_CHUNKS = 100_000  # about 45 MB (≈ 430 bytes per chunk on clinical notes)

_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class ChunkCache:
    """Wordpiece ids and chunk-relative character offsets of whitespace-free chunks."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast):
        self.tokenizer = tokenizer
        probe = tokenizer(["a"], add_special_tokens=True)["input_ids"][0]
        bare = tokenizer(["a"], add_special_tokens=False)["input_ids"][0]
        at = probe.index(bare[0])
        self.prefix, self.suffix = probe[:at], probe[at + len(bare):]
        self.pad_id = int(tokenizer.pad_token_id)
        self.added = sorted({str(t.content) for t in tokenizer.added_tokens_decoder.values() if str(t.content)})
        self.strings = numpy.asarray(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=object)
        self.chunks: Dict[str, Tuple[List[int], List[Tuple[int, int]]]] = {}

    def covers(self, texts: Sequence[str]) -> bool:
        """``False`` when a text holds an added token (the tokenizer matches those first)."""
        return not any(token in text for text in texts for token in self.added)

    def _fill(self, missing: List[str]) -> None:
        """Tokenize the missing chunks in one call (joined by spaces) and split the pieces back."""
        if len(self.chunks) + len(missing) > MAX_CACHED_CHUNKS:
            self.chunks.clear()
        starts = numpy.cumsum([0] + [len(chunk) + 1 for chunk in missing[:-1]])
        encoded = self.tokenizer(" ".join(missing), add_special_tokens=False, return_offsets_mapping=True,
                                 return_attention_mask=False, return_token_type_ids=False, verbose=False)
        ids, offsets = encoded["input_ids"], numpy.asarray(encoded["offset_mapping"], dtype="int64").reshape(-1, 2)
        owner = numpy.searchsorted(starts, offsets[:, 0], side="right") - 1
        relative = (offsets - starts[owner][:, None]).ravel().tolist()
        bounds = numpy.searchsorted(owner, numpy.arange(len(missing) + 1), side="left").tolist()
        for k, chunk in enumerate(missing):
            a, b = bounds[k], bounds[k + 1]
            self.chunks[chunk] = (ids[a:b], relative[2 * a : 2 * b])

    def batch(self, texts: Sequence[str]) -> Tuple[Dict[str, numpy.ndarray], WordpieceBatch]:
        rows = [[(m.group(), m.start()) for m in _CHUNK.finditer(text)] for text in texts]
        chunks = self.chunks
        missing = list({chunk: None for row in rows for chunk, _ in row if chunk not in chunks})
        if missing:
            self._fill(missing)
        # every row's pieces laid end to end: ids, chunk-relative offsets, each piece's chunk start
        prefix, suffix = self.prefix, self.suffix
        ids: List[int] = []
        edges: List[int] = []
        counts: List[int] = []
        starts: List[int] = []
        lengths: List[int] = []
        for row in rows:
            before = len(ids)
            ids.extend(prefix)
            for chunk, start in row:
                piece_ids, piece_edges = chunks[chunk]
                ids.extend(piece_ids)
                edges.extend(piece_edges)
                counts.append(len(piece_ids))
                starts.append(start)
            ids.extend(suffix)
            lengths.append(len(ids) - before)
        n_rows, width = len(texts), max(lengths, default=0)
        flat_ids = numpy.asarray(ids, dtype="int64")
        row_lengths = numpy.asarray(lengths, dtype="int64")
        row_starts = numpy.cumsum(row_lengths) - row_lengths
        is_text = numpy.ones(flat_ids.shape[0], dtype=bool)  # False at the special tokens around each row
        for k in range(len(prefix)):
            is_text[row_starts + k] = False
        for k in range(1, len(suffix) + 1):
            is_text[row_starts + row_lengths - k] = False
        flat_offsets = numpy.zeros((flat_ids.shape[0], 2), dtype="int64")
        shift = numpy.repeat(numpy.asarray(starts, dtype="int64"), numpy.asarray(counts, dtype="int64"))
        flat_offsets[is_text] = numpy.asarray(edges, dtype="int64").reshape(-1, 2) + shift[:, None]
        row_of = numpy.repeat(numpy.arange(n_rows), row_lengths)
        col_of = numpy.arange(flat_ids.shape[0]) - numpy.repeat(row_starts, row_lengths)
        input_ids = numpy.full((n_rows, width), self.pad_id, dtype="int64")
        input_ids[row_of, col_of] = flat_ids
        offset_mapping = numpy.zeros((n_rows, width, 2), dtype="int64")
        offset_mapping[row_of, col_of] = flat_offsets
        attention_mask = numpy.zeros((n_rows, width), dtype="float32")
        attention_mask[row_of, col_of] = 1.0
        batch = WordpieceBatch(
            strings=self.strings[input_ids].tolist(),  # padded rows, as spacy-transformers' strings
            input_ids=input_ids,
            attention_mask=attention_mask,
            lengths=lengths,
            token_type_ids=numpy.zeros_like(input_ids) if "token_type_ids" in self.tokenizer.model_input_names else None,
        )
        return {"offset_mapping": offset_mapping}, batch


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
