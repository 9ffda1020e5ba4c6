"""The tok2vec of the single-pass heads' default models: a ``TransformerListener``
of the upstream transformer, mean-pooling each token's wordpieces (config text);
and :func:`share_pooled_outputs`, which lets the heads pool a document once.

Both heads listen to the same transformer with the same parameter-free pooling
(``reduce_mean``), so at inference they would pool every token twice.  With
:func:`share_pooled_outputs` applied to a head's tok2vec, the first head that
pools a document's ``doc._.trf_data`` keeps the result on that object (keyed
by the pooling's name) and the second reads it: same arrays, one pooling.
Training (``is_train``) always pools, so gradients are unchanged; a pooling
with parameters is never shared.  At inference each document is pooled on its
own (:func:`_pool_each_document`): the same rows as spacy-transformers'
``trfs2arrays``, without copying the batch's aligned wordpieces into one array
and splitting the result again.
"""
from typing import Callable, List, Optional, Tuple

import numpy

from spacy_transformers.data_classes import TransformerData
from spacy_transformers.layers.trfs2arrays import forward as trfs2arrays_forward
from thinc.api import Model
from thinc.types import Floats2d, Ragged

LISTENER_TOK2VEC = """
[model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""

#: poolings without parameters: two listeners using one of them pool alike
SHAREABLE_POOLINGS = ("reduce_mean", "reduce_max", "reduce_sum", "reduce_first", "reduce_last")
#: attribute of a ``TransformerData`` holding ``{pooling name: [Floats2d per doc]}``
POOLED_CACHE_ATTR = "_spacy_softprompt_pooled"


def share_pooled_outputs(tok2vec: Model) -> Model:
    """Make the ``trfs2arrays`` layers inside ``tok2vec`` share their inference
    output per ``TransformerData`` (see the module docstring); returns ``tok2vec``."""
    for node in tok2vec.walk():
        if node.name == "trfs2arrays" and node._func is trfs2arrays_forward:
            node._func = _shared_trfs2arrays_forward
    return tok2vec


def _shared_trfs2arrays_forward(model: Model, trf_datas: List[TransformerData], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    pooling = model.layers[0]
    if is_train or pooling.name not in SHAREABLE_POOLINGS:
        return trfs2arrays_forward(model, trf_datas, is_train)
    outputs: List[Floats2d] = [None] * len(trf_datas)  # type: ignore[list-item]
    missing = []
    for i, trf_data in enumerate(trf_datas):
        cached = getattr(trf_data, POOLED_CACHE_ATTR, {}).get(pooling.name)
        if cached is None:
            missing.append(i)
        else:
            outputs[i] = cached
    if missing:
        computed = _pool_each_document(model, [trf_datas[i] for i in missing])
        if computed is None:
            computed, _ = trfs2arrays_forward(model, [trf_datas[i] for i in missing], False)
        for i, pooled in zip(missing, computed):
            outputs[i] = pooled
            if isinstance(trf_datas[i], TransformerData):
                trf_datas[i].__dict__.setdefault(POOLED_CACHE_ATTR, {})[pooling.name] = pooled

    def backprop(d_outputs):
        raise ValueError("pooled transformer outputs of an inference pass have no gradient")

    return outputs, backprop


def _pool_each_document(model: Model, trf_datas: List[TransformerData], batched: Optional[bool] = None) -> Optional[List[Floats2d]]:
    """Inference pooling of each document's aligned wordpieces, as ``trfs2arrays``
    computes it (``None`` for inputs that ``trfs2arrays`` handles specially:
    not a ``TransformerData``, or tokens without any wordpiece).

    ``batched`` (default: on a GPU) pools all documents in one gather and one
    pooling call and hands out row slices: a GPU then runs a few kernels per
    batch instead of a few per document; on a CPU the per-document calls
    avoid copying the batch's wordpieces into one array."""
    pooling, ops = model.layers[0], model.ops
    if batched is None:
        batched = ops.xp is not numpy
    hidden_of: List[Optional[Floats2d]] = []
    for trf_data in trf_datas:
        if not isinstance(trf_data, TransformerData):
            return None
        if "last_hidden_state" not in trf_data.model_output or trf_data.model_output.last_hidden_state.size == 0:
            hidden_of.append(None)  # empty document (trfs2arrays: width 0)
            continue
        if not trf_data.align.lengths.sum():
            return None
        hidden_of.append(ops.reshape2f(trf_data.model_output.last_hidden_state, -1, trf_data.width))
    if not batched:
        return [
            ops.alloc2f(0, 0) if hidden is None
            else pooling.predict(Ragged(hidden[trf_data.align.dataXd], ops.asarray(trf_data.align.lengths)))
            for trf_data, hidden in zip(trf_datas, hidden_of)
        ]
    present = [i for i, hidden in enumerate(hidden_of) if hidden is not None]
    outputs: List[Floats2d] = [ops.alloc2f(0, 0) for _ in trf_datas]
    if not present:
        return outputs
    sizes = numpy.asarray([hidden_of[i].shape[0] for i in present])
    offsets = numpy.cumsum(sizes) - sizes
    rows = numpy.concatenate([numpy.asarray(trf_datas[i].align.dataXd).reshape(-1) + offset for i, offset in zip(present, offsets)])
    lengths = numpy.concatenate([numpy.asarray(trf_datas[i].align.lengths) for i in present])
    stacked = ops.xp.concatenate([hidden_of[i] for i in present]) if len(present) > 1 else hidden_of[present[0]]
    pooled = pooling.predict(Ragged(stacked[ops.asarray(rows)], ops.asarray(lengths)))
    end = 0
    for i in present:
        start, end = end, end + len(trf_datas[i].align.lengths)
        outputs[i] = pooled[start:end]
    return outputs
