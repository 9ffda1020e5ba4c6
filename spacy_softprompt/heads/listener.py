"""The tok2vec of the single-pass heads' default models: a ``TransformerListener``
of the upstream transformer, mean-pooling each token's wordpieces (config text);
and :func:`share_pooled_outputs`, which lets the heads pool a document once.

Both heads listen to the same transformer with the same parameter-free pooling
(``reduce_mean``), so at inference they would pool every token twice.  With
:func:`share_pooled_outputs` applied to a head's tok2vec, the first head that
pools a document's ``doc._.trf_data`` keeps the result on that object (keyed
by the pooling's name) and the second reads it: same arrays, one pooling.
Training (``is_train``) always pools, so gradients are unchanged; a pooling
with parameters is never shared.
"""
from typing import Callable, List, Tuple

from spacy_transformers.data_classes import TransformerData
from spacy_transformers.layers.trfs2arrays import forward as trfs2arrays_forward
from thinc.api import Model
from thinc.types import Floats2d

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
        computed, _ = trfs2arrays_forward(model, [trf_datas[i] for i in missing], False)
        for i, pooled in zip(missing, computed):
            outputs[i] = pooled
            if isinstance(trf_datas[i], TransformerData):
                trf_datas[i].__dict__.setdefault(POOLED_CACHE_ATTR, {})[pooling.name] = pooled

    def backprop(d_outputs):
        raise ValueError("pooled transformer outputs of an inference pass have no gradient")

    return outputs, backprop
