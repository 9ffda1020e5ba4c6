"""The wordpiece batch of a list of window texts, without per-wordpiece Python.

:func:`wordpiece_batch` returns what ``spacy_transformers``'
``huggingface_tokenize`` + ``WordpieceBatch.from_batch_encoding`` return (same
arrays, strings and lengths), but with a fast tokenizer it takes each row's
wordpiece strings from the Rust encodings (one list per row) instead of
``convert_ids_to_tokens`` per row, and the lengths from the id array
(``input_ids != pad id``) instead of a comprehension over every string.
"""
from typing import List, Sequence, Tuple

import numpy
from spacy_transformers.data_classes import WordpieceBatch
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from transformers import BatchEncoding, PreTrainedTokenizerFast


def wordpiece_batch(tokenizer, texts: Sequence[str]) -> Tuple[BatchEncoding, WordpieceBatch]:
    """``(batch encoding with offset_mapping when the tokenizer is fast, WordpieceBatch)``."""
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
