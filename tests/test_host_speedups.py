"""The inference speed-ups give the outputs of the code they replace.

A tiny soft-prompt pipeline (deep prompt, token_ner + relation_extractor,
trained a few steps) annotates notes of varied length twice: with the
optimised stages, and with each stage put back to the old code path
(encoder rows in order and padded; wordpieces through spacy-transformers'
``huggingface_tokenize`` + ``WordpieceBatch.from_batch_encoding``; each head
pooling for itself).  Entities, relations, wordpieces and alignment must be
identical, hidden states and pooled vectors equal at every real position.

The per-Doc split of the transformer's batch (``SoftPromptTransformerBatch``) is
compared to spacy-transformers' ``FullTransformerBatch.split_by_doc``; the
decoding (``biluo_decoding.viterbi``, and ``biluo_decoding.decode``, which runs it
on the doubtful pieces only) and the relation head's pair vectors
(``relation_model._pair_forward``) are compared to verbatim copies of the code
they replaced (``_reference_viterbi``, ``_reference_pair_forward`` below).
"""
import types

import numpy
import pytest
from spacy_transformers.data_classes import FullTransformerBatch, WordpieceBatch
from spacy_transformers.layers.transformer_model import huggingface_tokenize
from spacy_transformers.layers.trfs2arrays import forward as trfs2arrays_forward
from thinc.layers.linear import forward as thinc_linear_forward
from thinc.layers.maxout import forward as thinc_maxout_forward
from thinc.shims.pytorch import PyTorchShim

import spacy_softprompt  # noqa: F401
from spacy_softprompt.annotations import get_relations
from spacy_softprompt.encoder import layer as encoder_layer
from spacy_softprompt.encoder.batch import SoftPromptTransformerBatch
from spacy_softprompt.heads import token_ner as token_ner_module
from spacy_softprompt.heads import biluo_decoding
from spacy_softprompt.heads.biluo_decoding import B, I, L, N_PARTS, U, _NEG, decode, n_tags, viterbi, viterbi_flat
from spacy_softprompt.heads.listener import POOLED_CACHE_ATTR
from spacy_softprompt.heads.relation_model import distance_buckets

ATOL = 1e-5


def _reference_viterbi(scores, lengths, xp=numpy):
    """The dense ``[N, T, S, S]`` Viterbi ``biluo_decoding.viterbi`` replaced (verbatim)."""
    N, T, K = scores.shape
    n_labels = (K - 1) // N_PARTS
    S = 1 + n_labels
    if N == 0 or T == 0:
        return xp.zeros((N, T), dtype="int32")
    scores = scores.astype("float32", copy=False)
    lengths = xp.asarray(lengths, dtype="int32")
    parts = scores[:, :, 1:].reshape(N, T, n_labels, N_PARTS)
    stay_cands = xp.concatenate([scores[:, :, :1], parts[..., U]], axis=2)  # O, U-x
    stay_arg = stay_cands.argmax(axis=2)
    inside = xp.arange(1, S)
    W = xp.full((N, T, S, S), _NEG, dtype="float32")  # W[n, t, state before, state after]
    W[:, :, 0, 0] = stay_cands.max(axis=2)
    W[:, :, 0, 1:] = parts[..., B]
    W[:, :, 1:, 0] = parts[..., L]
    W[:, :, inside, inside] = parts[..., I]
    padding = xp.arange(T)[None, :] >= lengths[:, None]
    identity = xp.asarray(numpy.where(numpy.eye(S, dtype=bool), 0.0, _NEG).astype("float32"))
    W = xp.where(padding[:, :, None, None], identity[None, None], W)
    state = xp.full((N, S), _NEG, dtype="float32")
    state[:, 0] = 0.0
    back = xp.empty((T, N, S), dtype="int32")
    for t in range(T):
        cand = state[:, :, None] + W[:, t]
        back[t] = cand.argmax(axis=1)
        state = cand.max(axis=1)
    states = xp.zeros((N, T + 1), dtype="int32")  # states[:, t]: before token t; paths end closed
    rows = xp.arange(N)
    z = states[:, T]
    for t in range(T - 1, -1, -1):
        z = back[t][rows, z]
        states[:, t] = z
    before, after = states[:, :T], states[:, 1:]
    label_of = xp.maximum(before, after) - 1
    part = xp.where(before == 0, xp.where(after == 0, U, B), xp.where(after == 0, L, I))
    tags = 1 + N_PARTS * label_of + part
    stay_tag = xp.where(stay_arg == 0, 0, 1 + N_PARTS * (stay_arg - 1) + U)
    tags = xp.where((before == 0) & (after == 0), stay_tag, tags)
    return xp.where(padding, 0, tags).astype("int32")


def _reference_pair_forward(model, X, is_train):
    """The per-document cumulative-sum pair forward ``relation_model._pair_forward`` replaced (verbatim)."""
    docs, pairs = X
    ops = model.ops
    tok2vec = model.get_ref("tok2vec")
    tokvecs, backprop_tok2vec = tok2vec(docs, is_train)
    table = model.get_param("D")
    width = tok2vec.get_dim("nO")
    outputs, caches = [], []
    for vecs, doc_pairs in zip(tokvecs, pairs):
        doc_pairs = numpy.asarray(ops.to_numpy(doc_pairs), dtype="i").reshape(-1, 4)
        if doc_pairs.shape[0] == 0:  # nothing to classify (an empty doc's vectors may be (0, 0))
            caches.append((None, vecs.shape))
            continue
        buckets = ops.asarray1i(distance_buckets(doc_pairs))
        cumsum = ops.xp.concatenate([ops.alloc2f(1, width), ops.xp.cumsum(vecs, axis=0)], axis=0)
        doc_pairs = ops.asarray2i(doc_pairs)
        len1 = ops.asarray2f((doc_pairs[:, 1] - doc_pairs[:, 0]).reshape(-1, 1))
        len2 = ops.asarray2f((doc_pairs[:, 3] - doc_pairs[:, 2]).reshape(-1, 1))
        arg1 = (cumsum[doc_pairs[:, 1]] - cumsum[doc_pairs[:, 0]]) / len1
        arg2 = (cumsum[doc_pairs[:, 3]] - cumsum[doc_pairs[:, 2]]) / len2
        outputs.append(ops.xp.hstack([arg1, arg2, arg1 * arg2, table[buckets]]))
        caches.append(((doc_pairs, len1, len2, arg1, arg2, buckets), vecs.shape))
    output = ops.xp.vstack(outputs) if outputs else ops.alloc2f(0, 3 * width + table.shape[1])

    def backprop(d_output):
        d_tokvecs = []
        d_table = ops.alloc2f(*table.shape)
        offset = 0
        for cache, vecs_shape in caches:
            if cache is None:
                d_tokvecs.append(ops.alloc2f(*vecs_shape))
                continue
            doc_pairs, len1, len2, arg1, arg2, buckets = cache
            n_tokens = vecs_shape[0]
            n = doc_pairs.shape[0]
            d = d_output[offset : offset + n]
            offset += n
            d_arg1 = d[:, :width] + d[:, 2 * width : 3 * width] * arg2
            d_arg2 = d[:, width : 2 * width] + d[:, 2 * width : 3 * width] * arg1
            ops.scatter_add(d_table, buckets, ops.xp.ascontiguousarray(d[:, 3 * width :]))
            # Mean pooling backward through a difference array: +g at start, -g at end.
            diff = ops.alloc2f(n_tokens + 1, width)
            for column, grad in ((0, d_arg1 / len1), (1, -d_arg1 / len1), (2, d_arg2 / len2), (3, -d_arg2 / len2)):
                ops.scatter_add(diff, ops.xp.ascontiguousarray(doc_pairs[:, column]), ops.xp.ascontiguousarray(grad))
            d_tokvecs.append(ops.xp.cumsum(diff, axis=0)[:n_tokens])
        model.inc_grad("D", d_table)
        return backprop_tok2vec(d_tokvecs)

    return output, backprop


def _old_wordpieces(tokenizer, texts):
    encoding = huggingface_tokenize(tokenizer, list(texts))
    return encoding, WordpieceBatch.from_batch_encoding(encoding)


def _heads_tok2vec(nlp):
    return [nlp.get_pipe(name).model.get_ref("tok2vec") for name in ("token_ner", "relation_extractor")]


def _annotate(nlp, texts):
    docs = list(nlp.pipe(texts, batch_size=4))
    ents = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in docs]
    rels = [sorted((r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in get_relations(doc)) for doc in docs]
    return docs, ents, rels


def _shim(nlp):
    return nlp.get_pipe("transformer").model.shim


def _pair_layer(nlp):
    return next(node for node in nlp.get_pipe("relation_extractor").model.walk() if node.name == "pair_representation")


def _old_paths(nlp, monkeypatch):
    encoder = nlp.get_pipe("transformer").model.encoder
    monkeypatch.setattr(token_ner_module, "decode", _reference_flat_decode)
    monkeypatch.setattr(token_ner_module.TokenEntityRecognizer, "tag_scores", lambda self, docs: self.model.predict(docs))
    monkeypatch.setattr(SoftPromptTransformerBatch, "split_by_doc", FullTransformerBatch.split_by_doc)
    monkeypatch.setattr(_pair_layer(nlp), "_func", _reference_pair_forward)
    monkeypatch.setattr(encoder, "forward", encoder._forward_in_row_chunks)
    monkeypatch.setattr(encoder_layer, "wordpiece_batch", _old_wordpieces)
    shim = _shim(nlp)
    monkeypatch.setattr(shim, "predict", types.MethodType(PyTorchShim.predict, shim))
    output_layer = nlp.get_pipe("token_ner").model.get_ref("output_layer")  # thinc's own Linear forward
    monkeypatch.setattr(output_layer, "_func", thinc_linear_forward)
    maxouts = [node for node in nlp.get_pipe("relation_extractor").model.walk() if node.name == "maxout"]
    assert maxouts, "the relation classifier has a Maxout layer"
    for node in maxouts:  # thinc's own Maxout forward
        monkeypatch.setattr(node, "_func", thinc_maxout_forward)
    for tok2vec in _heads_tok2vec(nlp):
        for node in tok2vec.walk():
            if node.name == "trfs2arrays":
                monkeypatch.setattr(node, "_func", trfs2arrays_forward)


def test_optimised_inference_gives_the_old_outputs(trained, monkeypatch):
    nlp, texts = trained
    new_docs, new_ents, new_rels = _annotate(nlp, texts)
    with monkeypatch.context() as patch:
        _old_paths(nlp, patch)
        old_docs, old_ents, old_rels = _annotate(nlp, texts)
    assert new_ents == old_ents and new_rels == old_rels
    for new, old in zip(new_docs, old_docs):
        numpy.testing.assert_allclose(
            [r["score"] for r in get_relations(new)], [r["score"] for r in get_relations(old)], atol=ATOL, rtol=0
        )
    assert sum(map(len, new_ents)) > 0 and sum(map(len, new_rels)) > 0  # the comparison covers both heads
    for new, old in zip(new_docs, old_docs):
        if not len(new):
            continue
        a, b = new._.trf_data, old._.trf_data
        assert a.wordpieces.strings == b.wordpieces.strings and a.wordpieces.lengths == b.wordpieces.lengths
        numpy.testing.assert_array_equal(a.wordpieces.input_ids, b.wordpieces.input_ids)
        numpy.testing.assert_array_equal(a.align.dataXd, b.align.dataXd)
        real = numpy.asarray(a.wordpieces.attention_mask, dtype=bool)
        new_hidden = a.model_output.last_hidden_state
        old_hidden = b.model_output.last_hidden_state
        numpy.testing.assert_allclose(new_hidden[real], old_hidden[real], atol=ATOL, rtol=0)


def test_inference_switches_the_encoder_to_eval_mode_once(trained, monkeypatch):
    nlp, texts = trained
    encoder = nlp.get_pipe("transformer").model.encoder
    list(nlp.pipe(texts[:2]))
    assert not encoder.training and not any(m.training for m in encoder.modules())
    switches = []
    original = type(encoder).train
    monkeypatch.setattr(encoder, "train", lambda mode=True: switches.append(mode) or original(encoder, mode))
    list(nlp.pipe(texts, batch_size=2))  # several batches: no walk over the module tree
    assert switches == []
    nlp.get_pipe("transformer").model.begin_update([nlp.make_doc(texts[0])])  # a training step: train mode back
    assert switches and switches[-1] is True and encoder.training
    list(nlp.pipe(texts[:1]))
    assert switches[-1] is False and not encoder.training


def test_heads_pool_each_document_once(trained):
    nlp, texts = trained
    ner_tok2vec, rel_tok2vec = _heads_tok2vec(nlp)
    docs = list(nlp.get_pipe("transformer").pipe(nlp.pipe(texts[:3], disable=["token_ner", "relation_extractor"])))
    first = ner_tok2vec.predict(docs)
    assert all(getattr(doc._.trf_data, POOLED_CACHE_ATTR)["reduce_mean"] is vecs for doc, vecs in zip(docs, first))
    second = rel_tok2vec.predict(docs)
    assert all(a is b for a, b in zip(first, second))  # read from the cache, not pooled again
    with pytest.MonkeyPatch.context() as patch:  # the cached vectors are those a fresh pooling gives
        for node in ner_tok2vec.walk():
            if node.name == "trfs2arrays":
                patch.setattr(node, "_func", trfs2arrays_forward)
        fresh = ner_tok2vec.predict(docs)
    for a, b in zip(first, fresh):
        numpy.testing.assert_array_equal(a, b)
    training, _ = ner_tok2vec.begin_update(docs)  # training pools afresh (its own gradients)
    assert all(a is not b for a, b in zip(training, first))


@pytest.mark.parametrize("pooling", ["reduce_mean", "reduce_max", "reduce_first"])
def test_batched_pooling_equals_pooling_each_document(trained, pooling):
    """The GPU's pooling (all documents in one gather and one call, then row slices) gives
    each document's own pooling, empty documents included."""
    from thinc.api import registry as thinc_registry

    from spacy_softprompt.heads.listener import _pool_each_document

    nlp, texts = trained
    docs = list(nlp.pipe(texts, disable=["token_ner", "relation_extractor"]))
    assert any(len(doc) == 0 for doc in docs)
    trfs2arrays = next(node for node in _heads_tok2vec(nlp)[0].walk() if node.name == "trfs2arrays")
    model = trfs2arrays.copy()
    model.layers[0] = thinc_registry.layers.get(f"{pooling}.v1")()
    each = _pool_each_document(model, [doc._.trf_data for doc in docs], batched=False)
    batched = _pool_each_document(model, [doc._.trf_data for doc in docs], batched=True)
    assert len(each) == len(batched) == len(docs)
    for doc, a, b in zip(docs, each, batched):
        assert a.shape == b.shape and (len(doc) == 0 or a.shape[0] == len(doc))
        numpy.testing.assert_array_equal(a, b)


def test_tag_scores_per_doc_equal_the_batched_model(trained):
    """token_ner's inference scores each Doc's vectors on their own: the batched model's scores."""
    nlp, texts = trained
    ner = nlp.get_pipe("token_ner")
    docs = list(nlp.pipe(texts, disable=["token_ner", "relation_extractor"]))
    per_doc, batched = ner.tag_scores(docs), ner.model.predict(docs)
    assert len(per_doc) == len(batched) and any(len(s) == 0 for s in per_doc)
    for a, b in zip(per_doc, batched):
        assert a.shape == b.shape
        numpy.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


def test_decoding_on_the_host_gives_the_per_doc_padding_result(trained):
    """token_ner copies the batch's scores once and decodes on the host; the result
    equals padding each Doc's scores into the batch one by one (the old code)."""
    from spacy_softprompt.heads.biluo_decoding import n_tags, path_spans, viterbi

    nlp, texts = trained
    ner = nlp.get_pipe("token_ner")
    docs = list(nlp.pipe(texts, disable=["token_ner", "relation_extractor"]))
    scores = ner.model.predict(docs)
    assert any(s.shape[0] == 0 for s in scores) and len({s.shape[0] for s in scores}) > 3
    lengths = numpy.asarray([s.shape[0] for s in scores], dtype="int32")
    padded = numpy.zeros((len(scores), int(lengths.max()), n_tags(len(ner.labels))), dtype="float32")
    for i, doc_scores in enumerate(scores):
        if lengths[i]:
            padded[i, : lengths[i]] = doc_scores
    expected = path_spans(viterbi(padded, lengths), lengths)
    numpy.testing.assert_array_equal(ner.decode(scores), expected)
    assert len(expected) > 0


def _random_scores(rng, n_labels, lengths, extra=0):
    scale = rng.choice([0.1, 1.0, 100.0])
    scores = rng.normal(size=(len(lengths), max(lengths, default=0) + extra, n_tags(n_labels))) * scale
    scores[..., 2::4] += rng.uniform(0, 3 * scale, size=scores[..., 2::4].shape)  # tempt invalid I- tags
    if rng.rand() < 0.4:
        scores = numpy.round(scores)  # ties between paths
    return scores.astype("float32")


@pytest.mark.parametrize("seed", range(40))
def test_viterbi_gives_the_reference_paths(seed):
    """The sparse, longest-first Viterbi returns the dense one's tags exactly (ties included)."""
    rng = numpy.random.RandomState(seed)
    n_labels = int(rng.randint(1, 8))
    lengths = rng.randint(0, 40 if seed % 4 else 300, size=int(rng.randint(1, 12)))
    scores = _random_scores(rng, n_labels, lengths, extra=int(rng.randint(0, 3)))
    numpy.testing.assert_array_equal(viterbi(scores, lengths), _reference_viterbi(scores, lengths))


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_flat_on_many_short_pieces_matches_the_reference(seed):
    """Many pieces of mixed lengths (empty ones included) with up to 40 labels, laid end
    to end: the time-major Viterbi gives the dense one's tags exactly."""
    rng = numpy.random.RandomState(100 + seed)
    n_labels = int(rng.choice([1, 12, 40]))
    lengths = numpy.concatenate([rng.randint(0, 4, size=200), rng.randint(0, 25, size=20)])
    rng.shuffle(lengths)
    scores = _random_scores(rng, n_labels, lengths)
    flat = _flat(scores, lengths)
    numpy.testing.assert_array_equal(viterbi_flat(flat, lengths), _reference_flat_decode(flat, lengths))
    with pytest.raises(ValueError):
        viterbi_flat(flat[:-1], lengths)


def test_viterbi_edge_shapes_match_the_reference():
    for shape, lengths in [((0, 0, 5), []), ((3, 0, 9), [0, 0, 0]), ((2, 4, 5), [0, 0]), ((1, 1, 29), [1])]:
        scores = numpy.random.RandomState(0).normal(size=shape).astype("float32")
        numpy.testing.assert_array_equal(viterbi(scores, numpy.asarray(lengths)), _reference_viterbi(scores, numpy.asarray(lengths)))


def test_viterbi_on_pipeline_scores_matches_the_reference(trained):
    nlp, texts = trained
    ner = nlp.get_pipe("token_ner")
    scores = ner.model.predict(list(nlp.pipe(texts, disable=["token_ner", "relation_extractor"])))
    lengths = numpy.asarray([s.shape[0] for s in scores])
    padded = numpy.zeros((len(scores), int(lengths.max()), n_tags(len(ner.labels))), dtype="float32")
    for i, doc_scores in enumerate(scores):
        padded[i, : lengths[i]] = doc_scores
    expected = _reference_viterbi(padded, lengths)
    numpy.testing.assert_array_equal(viterbi(padded, lengths), expected)
    assert (expected > 0).any()


def _reference_flat_decode(flat, lengths):
    """The dense reference Viterbi on rows laid end to end (token_ner's old decoding)."""
    lengths = numpy.asarray(lengths)
    rows, columns = _rows_columns(lengths)
    padded = numpy.zeros((len(lengths), int(lengths.max(initial=0)), flat.shape[1]), dtype="float32")
    padded[rows, columns] = flat
    return _reference_viterbi(padded, lengths)[rows, columns]


def _rows_columns(lengths):
    rows = numpy.repeat(numpy.arange(len(lengths)), lengths)
    return rows, numpy.arange(int(numpy.sum(lengths))) - numpy.repeat(numpy.cumsum(lengths) - lengths, lengths)


def _flat(padded, lengths):
    return padded[_rows_columns(lengths)]


def _peaked_scores(rng, n_labels, lengths, noise):
    """Scores of a confident tagger: a random valid path leads by a few points, plus noise
    (some tokens then prefer an invalid tag, some ties when rounded)."""
    K = n_tags(n_labels)
    scores = rng.normal(scale=noise, size=(len(lengths), max(lengths, default=0), K))
    for row, n in enumerate(lengths):
        t = 0
        while t < n:
            label, kind = rng.randint(n_labels), rng.rand()
            size = 1 if kind < 0.85 else (1 if kind < 0.92 else rng.randint(2, 6))
            if kind < 0.85:
                tags = [0]
            elif size == 1:
                tags = [1 + N_PARTS * label + U]
            else:
                tags = [1 + N_PARTS * label + B] + [1 + N_PARTS * label + I] * (size - 2) + [1 + N_PARTS * label + L]
            for tag in tags[: n - t]:
                scores[row, t, tag] += rng.uniform(2, 8)
                t += 1
    if rng.rand() < 0.3:
        scores = numpy.round(scores)
    return scores.astype("float32")


@pytest.mark.parametrize("seed", range(60))
def test_decode_gives_the_viterbi_paths(seed):
    """Random and confident-tagger scores (ties included): the piecewise decoding returns
    the Viterbi's tags exactly."""
    rng = numpy.random.RandomState(seed)
    n_labels = int(rng.randint(1, 8))
    lengths = rng.randint(0, 40 if seed % 4 else 400, size=int(rng.randint(1, 12)))
    if seed % 2:
        scores = _peaked_scores(rng, n_labels, lengths, noise=rng.choice([0.3, 1.0, 2.0]))
    else:
        scores = _random_scores(rng, n_labels, lengths)[:, : max(lengths, default=0)]
    numpy.testing.assert_array_equal(decode(_flat(scores, lengths), lengths), _flat(viterbi(scores, lengths), lengths))


def test_decode_runs_the_viterbi_on_short_pieces_only(monkeypatch):
    """A confident tagger's rows are cut at settled O tokens: the Viterbi sees pieces far
    shorter than the rows (or nothing at all), and the tags are still the Viterbi's."""
    rng = numpy.random.RandomState(0)
    lengths = numpy.asarray([600, 450, 0, 37, 600])
    scores = _peaked_scores(rng, 7, lengths, noise=1.0)
    seen = []
    original = biluo_decoding.viterbi_flat
    monkeypatch.setattr(biluo_decoding, "viterbi_flat", lambda s, n: seen.append(max(n)) or original(s, n))
    tags = decode(_flat(scores, lengths), lengths)
    assert seen and all(longest < 60 for longest in seen), seen
    numpy.testing.assert_array_equal(tags, _flat(viterbi(scores, lengths), lengths))
    with pytest.raises(ValueError):
        decode(_flat(scores, lengths)[:-1], lengths)


def test_decode_edge_shapes():
    for K, lengths in [(5, []), (9, [0, 0, 0]), (29, [1]), (5, [0, 3, 0])]:
        lengths = numpy.asarray(lengths, dtype="int64")
        scores = numpy.random.RandomState(0).normal(size=(int(lengths.sum()), K)).astype("float32")
        numpy.testing.assert_array_equal(decode(scores, lengths), _reference_flat_decode(scores, lengths))
    assert decode(numpy.ones((5, 1), dtype="float32"), numpy.asarray([2, 3])).tolist() == [0] * 5  # no labels: O


def test_decode_on_pipeline_scores_matches_the_reference(trained):
    nlp, texts = trained
    ner = nlp.get_pipe("token_ner")
    scores = ner.model.predict(list(nlp.pipe(texts, disable=["token_ner", "relation_extractor"])))
    lengths = numpy.asarray([s.shape[0] for s in scores])
    flat = numpy.concatenate([s for s in scores if len(s)])
    numpy.testing.assert_array_equal(decode(flat, lengths), _reference_flat_decode(flat, lengths))


def _fixed_vectors_layer(vectors, width):
    """A pair representation over given per-doc token vectors."""
    from thinc.api import Model
    from spacy_softprompt.heads.relation_model import pair_representation

    tok2vec = Model("fixed", lambda m, X, is_train: ([v.copy() for v in vectors], lambda d: d), dims={"nO": width})
    return pair_representation(tok2vec, distance_width=4)


@pytest.mark.parametrize("seed", range(6))
def test_pair_vectors_and_gradients_match_the_reference(seed):
    """Per-batch gathering of distinct argument spans gives the per-doc cumulative
    sums' outputs and gradients (docs without pairs, repeated spans, long docs)."""
    rng = numpy.random.RandomState(seed)
    width = 8
    n_tokens = [0, 1, 3, 40, 700][: 2 + seed % 4] + [int(rng.randint(2, 60)) for _ in range(3)]
    vectors = [rng.normal(size=(n, width)).astype("float32") if n else numpy.zeros((0, 0), "float32") for n in n_tokens]
    pairs = []
    for n in n_tokens:
        if n < 2 or rng.rand() < 0.2:
            pairs.append(numpy.zeros((0, 4), dtype="i"))
            continue
        starts = rng.randint(0, n - 1, size=int(rng.randint(1, 25)))
        ends = numpy.minimum(starts + rng.randint(1, 4, size=starts.shape), n)
        spans = numpy.stack([starts, ends], axis=1)
        a, b = rng.randint(0, len(spans), size=(2, int(rng.randint(1, 40))))
        pairs.append(numpy.concatenate([spans[a], spans[b]], axis=1).astype("i"))
    docs = [None] * len(vectors)
    layer = _fixed_vectors_layer(vectors, width)
    layer.initialize(X=(docs, pairs))
    d_table = {}
    results = []
    for forward in (layer._func, _reference_pair_forward):
        out, backprop = forward(layer, (docs, pairs), True)
        d_out = numpy.random.RandomState(99).normal(size=out.shape).astype("float32")
        layer.set_grad("D", numpy.zeros_like(layer.get_param("D")))
        d_vectors = backprop(d_out)
        d_table[forward] = layer.get_grad("D").copy()
        results.append((out, d_vectors))
    (new_out, new_d), (old_out, old_d) = results
    assert new_out.shape == old_out.shape and new_out.shape[0] == sum(len(p) for p in pairs)
    numpy.testing.assert_allclose(new_out, old_out, atol=ATOL, rtol=0)
    numpy.testing.assert_allclose(d_table[layer._func], d_table[_reference_pair_forward], atol=ATOL, rtol=0)
    for new, old in zip(new_d, old_d):
        assert new.shape == old.shape
        numpy.testing.assert_allclose(new, old, atol=ATOL, rtol=0)


def test_relation_scores_match_the_reference_on_the_pipeline(trained, monkeypatch):
    """Same candidate pairs, same classifier scores (1e-5) with the old pair forward."""
    nlp, texts = trained
    rel = nlp.get_pipe("relation_extractor")
    docs = list(nlp.pipe(texts, disable=["relation_extractor"]))
    found, new_scores = rel.predict(docs)
    with monkeypatch.context() as patch:
        patch.setattr(_pair_layer(nlp), "_func", _reference_pair_forward)
        old_found, old_scores = rel.predict(docs)
    assert [index.tolist() for _, index in found] == [index.tolist() for _, index in old_found]
    assert new_scores is not None and len(new_scores) > 10
    numpy.testing.assert_allclose(new_scores, old_scores, atol=ATOL, rtol=0)


def _assert_same_doc_data(new, old):
    assert len(new) == len(old)
    for a, b in zip(new, old):
        assert a.wordpieces.strings == b.wordpieces.strings and list(a.wordpieces.lengths) == list(b.wordpieces.lengths)
        numpy.testing.assert_array_equal(a.wordpieces.input_ids, b.wordpieces.input_ids)
        numpy.testing.assert_array_equal(a.align.dataXd, b.align.dataXd)
        numpy.testing.assert_array_equal(a.align.lengths, b.align.lengths)
        assert sorted(a.model_output.keys()) == sorted(b.model_output.keys())
        for key in b.model_output.keys():
            numpy.testing.assert_array_equal(a.model_output[key], b.model_output[key])


def test_split_by_doc_matches_spacy_transformers(trained):
    """Per-Doc wordpieces, alignment and outputs as spacy-transformers splits them
    (empty docs, a one-token doc, long docs in several windows, a Doc given twice)."""
    nlp, texts = trained
    model = nlp.get_pipe("transformer").model
    docs = [nlp.make_doc(text) for text in texts]
    assert any(len(spans) > 1 for spans in model.attrs["get_spans"](docs))  # a doc in several windows
    for batch in (docs, docs[:3] + [docs[1]] + docs[3:], docs[-2:]):
        output = model.predict(batch)
        assert isinstance(output, SoftPromptTransformerBatch)
        reference = FullTransformerBatch(
            spans=output.spans, wordpieces=output.wordpieces, model_output=output.model_output, align=output.align
        )
        _assert_same_doc_data(output.split_by_doc(), reference.split_by_doc())
