"""The token-classification concept network: token vectors -> BILUO tag scores.

Input: a list of Docs. Output: one ``Floats2d`` of unnormalised tag scores
(logits, ``[n_tokens, n_tags]``) per Doc. The token vectors come from a tok2vec
(normally ``spacy-transformers.TransformerListener.v1`` with ``reduce_mean``
pooling of each token's wordpieces); an optional ReLU hidden layer and dropout
sit before the linear output layer.
"""
from typing import List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Dropout, Model, Relu, chain, with_array
from thinc.types import Floats2d

from .linear import TorchLinear
from .listener import share_pooled_outputs


@registry.architectures("spacy_softprompt.TokenNERModel.v1")
def create_token_ner_model_v1(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: int = 0,
    dropout: float = 0.1,
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """Per-token tag scores over ``tok2vec``; ``hidden_width = 0``: no hidden layer.
    ``nO`` (the number of tags) is set by the pipe's ``initialize``.  At inference the
    pooled token vectors are shared with the other heads (:func:`.listener.share_pooled_outputs`)."""
    share_pooled_outputs(tok2vec)
    layers: List[Model] = []
    if hidden_width:
        layers.append(Relu(nO=hidden_width, dropout=dropout, normalize=True))
    else:
        layers.append(Dropout(dropout))
    output_layer = TorchLinear(nO=nO)  # thinc's Linear, products in torch on CPU
    model = chain(tok2vec, with_array(chain(*layers, output_layer)))
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("output_layer", output_layer)
    return model
