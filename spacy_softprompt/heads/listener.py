"""The tok2vec of the single-pass heads' default models: a ``TransformerListener``
of the upstream transformer, mean-pooling each token's wordpieces (config text)."""

LISTENER_TOK2VEC = """
[model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""
