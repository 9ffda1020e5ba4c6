"""Registered spaCy architectures of spacy-softprompt.

Exposed through the ``spacy_architectures`` entry point group, so configs
resolve without ``--code``.  Never change a released ``vN``: add ``vN+1``.
"""
from typing import Callable, List

from spacy.tokens import Doc
from spacy.util import registry
from spacy_transformers.data_classes import FullTransformerBatch
from spacy_transformers.layers.split_trf import split_trf_batch
from spacy_transformers.layers.trfs2arrays import trfs2arrays
from thinc.api import Model, chain
from thinc.types import Floats2d, Ragged

from .encoder import windows as _windows  # noqa: F401  (registers sentence_windows.v1 without entry points)
from .encoder.layer import EncoderSettings, SoftPromptTransformerModel
from .settings import takes_settings

#: settings added by the v2 architectures (LoRA adapters in a frozen backbone)
ADAPTER_SETTINGS = ("adapter_rank", "adapter_alpha", "adapter_targets")
#: settings added after v1 (v1 keeps its signature: these keep their defaults there)
V2_SETTINGS = ADAPTER_SETTINGS + ("backbone_dtype",)


@registry.architectures("spacy_softprompt.SoftPromptTransformerModel.v1")
@takes_settings(EncoderSettings, exclude=V2_SETTINGS)
def create_soft_prompt_transformer_model_v1(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict = {},
    transformer_config: dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},
    *,
    settings: EncoderSettings,
) -> Model[List[Doc], FullTransformerBatch]:
    """A prompted transformer, a drop-in for ``spacy-transformers.TransformerModel.v3``
    (same ``transformer`` pipe, listeners, span getters).

    name (str): HF hub name, local folder, or installed package holding the model.
    get_spans: span getter (windows); a strided window must fit the text budget.
    tokenizer_config, transformer_config, mixed_precision, grad_scaler_config:
        as in TransformerModel.v3.
    prompt_length (int): P soft prompt vectors; 0 = plain model (bit-identical).
    prompt_depth (str): "input" (P vectors before the input embeddings) or
        "deep" (P key/value prefix vectors at every layer, P-tuning v2).
    prompt_init (str): "text" (embeddings of prompt_init_text), "vocab" (sampled
        real vocabulary rows), "random" (scaled to the embedding table).
    prompt_init_text (str or dict name -> text): text for prompt_init = "text".
    prompt_names (List[str]): named prompts sharing the backbone; a Doc picks
        one with ``doc._.prompt`` (None = the first).
    reparameterize (bool): train the prompt through an MLP (folded when saved).
    reparameterize_hidden_size (int): width of that MLP.
    hard_prompt (str or None): text placed before every window
        ([CLS] hard prompt [SEP] window [SEP]); stripped before alignment.
    freeze_backbone (bool): backbone requires_grad False + eval mode.
    save_backbone (bool): false = prompt-only saves (needs freeze_backbone),
        the backbone is found again by name/path and verified by SHA-256.
    gradient_checkpointing (bool): per-layer activation checkpointing.
    mixed_precision_dtype (str): "float16" (with grad scaler) or "bfloat16".
    init_seed (int or None): seed for the prompt init (None: torch's global RNG).
    """
    return SoftPromptTransformerModel(
        name, get_spans, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config, settings=settings
    )


@registry.architectures("spacy_softprompt.SoftPromptTok2VecTransformer.v1")
@takes_settings(EncoderSettings, exclude=V2_SETTINGS)
def create_soft_prompt_tok2vec_transformer_v1(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict,
    pooling: Model[Ragged, Floats2d],
    grad_factor: float = 1.0,
    transformer_config: dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},
    *,
    settings: EncoderSettings,
) -> Model[List[Doc], List[Floats2d]]:
    """The prompted transformer used directly as a component's tok2vec layer
    (what ``replace_listeners`` turns a listener into); arguments as above plus
    ``pooling`` and ``grad_factor`` of ``spacy-transformers.Tok2VecTransformer.v3``."""
    transformer = SoftPromptTransformerModel(
        name, get_spans, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config, settings=settings
    )
    # chain of chain, matching TransformerListener after replace_listener
    return chain(chain(transformer, split_trf_batch()), trfs2arrays(pooling, grad_factor))


@registry.architectures("spacy_softprompt.SoftPromptTransformerModel.v2")
@takes_settings(EncoderSettings)
def create_soft_prompt_transformer_model_v2(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict = {},
    transformer_config: dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},
    *,
    settings: EncoderSettings,
) -> Model[List[Doc], FullTransformerBatch]:
    """v1 plus low-rank adapters (LoRA, through PEFT) in the frozen backbone:

    adapter_rank (int): rank of the adapters (0: none, as v1); needs
        freeze_backbone = true. With a frozen backbone the optimizer's
        ``learn_rate`` is the adapters' rate.
    adapter_alpha (float): updates are scaled by adapter_alpha / adapter_rank.
    adapter_targets (str): regular expression of the modules that get adapters
        (default: every attention and feed-forward projection of the encoder layers).
    Adapters are saved with the prompt, also in prompt-only saves.
    backbone_dtype (str): "float32" (default), "bfloat16" or "float16": the dtype the
        backbone's weights are kept in, on the device and in saves. Half precision
        halves the weights' memory (GatorTron-large: 35 GB -> 18 GB) and needs
        freeze_backbone = true and adapter_rank = 0; the prompt and heads stay
        float32, the transformer's output is float32.
    """
    return SoftPromptTransformerModel(
        name, get_spans, tokenizer_config, transformer_config, mixed_precision, grad_scaler_config, settings=settings
    )


@registry.architectures("spacy_softprompt.SoftPromptTok2VecTransformer.v2")
@takes_settings(EncoderSettings)
def create_soft_prompt_tok2vec_transformer_v2(
    name: str,
    get_spans: Callable,
    tokenizer_config: dict,
    pooling: Model[Ragged, Floats2d],
    grad_factor: float = 1.0,
    transformer_config: dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},
    *,
    settings: EncoderSettings,
) -> Model[List[Doc], List[Floats2d]]:
    """The v2 prompted transformer (adapters) as a component's tok2vec layer."""
    return create_soft_prompt_tok2vec_transformer_v1.__wrapped__(
        name, get_spans, tokenizer_config, pooling, grad_factor, transformer_config, mixed_precision,
        grad_scaler_config, settings=settings,
    )
