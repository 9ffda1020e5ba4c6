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
        Maxout(nO=hidden_width, nP=2, dropout=dropout, normalize=True),
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


def _pair_forward(model: Model, X: PairInput, is_train: bool) -> Tuple[Floats2d, Callable]:
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

    def backprop(d_output: Floats2d) -> List[Doc]:
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
