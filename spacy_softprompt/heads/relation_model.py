"""The relation classifier network: entity-pair representations over token vectors.

Input: ``(docs, pairs)`` where ``pairs[i]`` is an ``Ints2d`` of shape
``(n_pairs_i, 4)`` holding token offsets ``[start1, end1, start2, end2]`` of
the two arguments in ``docs[i]``. Output: ``Floats2d`` of shape
``(sum n_pairs_i, n_labels + 1)``, softmax probabilities where column 0 is
"no relation".

A pair is represented by the mean token vector of each argument, their
element-wise product and a learned embedding of the bucketed token distance
between them (``[a1, a2, a1 * a2, dist]``), followed by a hidden layer.
"""
from typing import Callable, List, Optional, Tuple

import numpy
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, chain, Maxout, Softmax, Dropout
from thinc.types import Floats2d, Ints2d

from .listener import share_pooled_outputs
from .linear import use_torch_products

PairInput = Tuple[List[Doc], List[Ints2d]]

# Token-distance buckets: 0,1,2,3,4,5-7,8-15,16-31,32-63,64+ (x2 for direction).
_DISTANCE_EDGES = numpy.asarray([1, 2, 3, 4, 5, 8, 16, 32, 64], dtype="i")
N_DISTANCE_BUCKETS = 2 * (len(_DISTANCE_EDGES) + 1)


@registry.architectures("spacy_softprompt.RelationModel.v1")
def create_relation_model_v1(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 256,
    distance_width: int = 16,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[PairInput, Floats2d]:
    """Pair classifier fed by a tok2vec (e.g. a ``TransformerListener``); at inference
    the pooled token vectors are shared with the other heads (:func:`.listener.share_pooled_outputs`)."""
    pair_repr = pair_representation(share_pooled_outputs(tok2vec), distance_width)
    model = chain(
        pair_repr,
        use_torch_products(Maxout(nO=hidden_width, nP=2, dropout=dropout, normalize=True)),
        Dropout(dropout),
        Softmax(nO=nO),
    )
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", model.layers[-1])
    return model


def pair_representation(tok2vec: Model, distance_width: int) -> Model[PairInput, Floats2d]:
    return Model(
        "pair_representation",
        _pair_forward,
        layers=[tok2vec],
        params={"D": None},
        dims={"nO": None, "nD": distance_width},
        init=_pair_init,
        refs={"tok2vec": tok2vec},
    )


def _pair_init(model: Model, X: PairInput = None, Y=None) -> None:
    tok2vec = model.get_ref("tok2vec")
    if X is not None:
        tok2vec.initialize(X=X[0])
    width = tok2vec.get_dim("nO")
    n_dist = model.get_dim("nD")
    model.set_dim("nO", 3 * width + n_dist)
    scale = 1.0 / numpy.sqrt(n_dist)
    table = model.ops.asarray2f(numpy.random.uniform(-scale, scale, (N_DISTANCE_BUCKETS, n_dist)))
    model.set_param("D", table)


def distance_buckets(pairs: numpy.ndarray) -> numpy.ndarray:
    """Bucket the signed token distance between the two arguments of each pair."""
    start1, end1, start2, end2 = pairs[:, 0], pairs[:, 1], pairs[:, 2], pairs[:, 3]
    gap = numpy.maximum(0, numpy.maximum(start2 - end1, start1 - end2))
    bucket = numpy.searchsorted(_DISTANCE_EDGES, gap, side="right")
    arg1_first = start1 <= start2
    return numpy.where(arg1_first, bucket, bucket + len(_DISTANCE_EDGES) + 1)


def argument_spans(pairs: List[numpy.ndarray]) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The distinct argument spans of a batch's pairs and where each argument is.

    ``pairs[i]``: ``[n_i, 4]`` token offsets of doc ``i``'s pairs. Returns
    ``(spans, which)``: ``spans`` ``[m, 3]`` int64 rows ``(doc, start, end)``,
    sorted (so grouped by doc); ``which`` ``[2, n]``: the row of ``spans`` of
    each pair's first and second argument, pairs in batch order."""
    counts = [len(p) for p in pairs]
    flat = numpy.concatenate(pairs).astype("int64", copy=False)
    doc = numpy.repeat(numpy.arange(len(pairs), dtype="int64"), counts)
    starts = numpy.concatenate([flat[:, 0], flat[:, 2]])
    ends = numpy.concatenate([flat[:, 1], flat[:, 3]])
    docs = numpy.concatenate([doc, doc])
    size = int(max(ends.max(initial=0), starts.max(initial=0))) + 1
    keys, which = numpy.unique((docs * size + starts) * size + ends, return_inverse=True)
    spans = numpy.stack([keys // (size * size), (keys // size) % size, keys % size], axis=1)
    return spans, which.reshape(2, -1)


def _pair_forward(model: Model, X: PairInput, is_train: bool) -> Tuple[Floats2d, Callable]:
    """Argument vectors as the mean of their tokens' vectors, computed once per
    distinct argument span of the batch (one gather per doc that has pairs, one
    ``reduce_mean`` for the batch); the backward pass scatters the gradients
    back to those tokens."""
    docs, pairs = X
    ops = model.ops
    tok2vec = model.get_ref("tok2vec")
    tokvecs, backprop_tok2vec = tok2vec(docs, is_train)
    table = model.get_param("D")
    width = tok2vec.get_dim("nO")
    pair_arrays = [numpy.asarray(ops.to_numpy(p), dtype="i").reshape(-1, 4) for p in pairs]
    n_pairs = sum(len(p) for p in pair_arrays)
    if n_pairs == 0:  # nothing to classify (an empty doc's vectors may be (0, 0))
        output = ops.alloc2f(0, 3 * width + table.shape[1])

        def backprop_nothing(d_output: Floats2d) -> List[Doc]:
            model.inc_grad("D", ops.alloc2f(*table.shape))
            return backprop_tok2vec([ops.alloc2f(*vecs.shape) for vecs in tokvecs])

        return output, backprop_nothing
    spans, which = argument_spans(pair_arrays)
    span_lengths = (spans[:, 2] - spans[:, 1]).astype("int32")
    # token rows of each span, spans one after the other: rows of doc d are rows[bounds[d]:bounds[d + 1]]
    row_span = numpy.repeat(numpy.arange(len(spans)), span_lengths)
    first_row = numpy.cumsum(span_lengths) - span_lengths
    token_rows = spans[row_span, 1] + numpy.arange(len(row_span)) - first_row[row_span]
    bounds = numpy.searchsorted(spans[row_span, 0], numpy.arange(len(docs) + 1))
    token_rows_dev = ops.asarray1i(token_rows)
    with_spans = [d for d in range(len(docs)) if bounds[d + 1] > bounds[d]]
    gathered = ops.xp.concatenate([tokvecs[d][token_rows_dev[bounds[d] : bounds[d + 1]]] for d in with_spans])
    span_lengths_dev = ops.asarray1i(span_lengths)
    span_vecs = ops.reduce_mean(ops.xp.ascontiguousarray(gathered), span_lengths_dev)
    first_arg, second_arg = ops.asarray1i(which[0]), ops.asarray1i(which[1])
    arg1, arg2 = span_vecs[first_arg], span_vecs[second_arg]
    buckets = ops.asarray1i(distance_buckets(numpy.concatenate(pair_arrays)))
    output = ops.xp.hstack([arg1, arg2, arg1 * arg2, table[buckets]])

    def backprop(d_output: Floats2d) -> List[Doc]:
        d_table = ops.alloc2f(*table.shape)
        ops.scatter_add(d_table, buckets, ops.xp.ascontiguousarray(d_output[:, 3 * width :]))
        model.inc_grad("D", d_table)
        d_product = d_output[:, 2 * width : 3 * width]
        d_spans = ops.alloc2f(len(spans), width)
        ops.scatter_add(d_spans, first_arg, ops.xp.ascontiguousarray(d_output[:, :width] + d_product * arg2))
        ops.scatter_add(d_spans, second_arg, ops.xp.ascontiguousarray(d_output[:, width : 2 * width] + d_product * arg1))
        d_gathered = ops.backprop_reduce_mean(d_spans, span_lengths_dev)
        d_tokvecs = [ops.alloc2f(*vecs.shape) for vecs in tokvecs]
        for d in with_spans:
            rows = slice(bounds[d], bounds[d + 1])
            ops.scatter_add(d_tokvecs[d], token_rows_dev[rows], ops.xp.ascontiguousarray(d_gathered[rows]))
        return backprop_tok2vec(d_tokvecs)

    return output, backprop
