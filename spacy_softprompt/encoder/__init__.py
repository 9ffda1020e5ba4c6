"""Prompted encoders: soft / hard prompts over a Hugging Face backbone.

Stable torch API (other components code against it)
-----------------------------------------------------
``PromptedEncoder(backbone, *, prompt_length=0, prompt_depth="input",
prompt_names=("default",), reparameterize=False, reparameterize_hidden_size=512,
hard_prompt_ids=None, text_token_type_id=1, freeze_backbone=False,
gradient_checkpointing=False, autocast_dtype=None)`` -- a ``torch.nn.Module``.

``encoder(input_ids, attention_mask=None, token_type_ids=None, prompt_ids=None)
-> transformers BaseModelOutput`` with ``last_hidden_state: FloatTensor[B, L, H]``
for the *real* tokens only (same ``L`` as ``input_ids``; prompt rows and hard
prompt wordpieces removed).  ``prompt_ids: LongTensor[B]`` indexes
``prompt_names`` per row (default 0), so mixed-prompt batches are one forward.
``input_ids`` rows are ordinary single-segment rows (``[CLS] ... [SEP] [PAD]*``)
of at most ``max_text_length`` wordpieces.

Attributes / methods:

* ``.backbone`` -- the HF model; ``.config`` -- its config.
* ``.prompt_names`` -- ``List[str]``; ``.prompt_index(name) -> int``.
* ``.prompt_parameters() -> List[Parameter]``; ``.num_trainable_parameters() -> int``
  (``P*H`` per prompt for input prompts, ``P*2*layers*H`` for deep prompts,
  plus the backbone's parameters when it is not frozen).
* ``.hidden_size``; ``.max_text_length`` (usable wordpieces per row, specials
  included: ``max_position_embeddings - P - hard prompt``); ``.max_positions``.
* ``.freeze_backbone()`` / ``.unfreeze_backbone()``, ``.backbone_frozen``;
  ``.enable_gradient_checkpointing()``.
* ``.init_prompts(method, *, token_ids=None, num_real_tokens=None,
  exclude_ids=(), generator=None)`` -- ``"text"``, ``"vocab"``, ``"random"``.
* ``.export_prompt_state() -> {"table": Tensor[n_prompts, P, width]}`` (folded),
  ``.load_prompt_state(state)``, ``.fold_reparameterization()``, ``.get_config()``.

Prompt parameter names all contain the segment ``prompt_encoder``
(``PROMPT_MODULE_NAME``): ``spacy_softprompt.PromptAdam.v1`` gives them
``prompt_learn_rate``.

spaCy side
----------
``SoftPromptTransformerModel`` (architecture
``spacy_softprompt.SoftPromptTransformerModel.v1``) puts the encoder in the
``transformer`` pipe.  A Doc chooses its prompt with the extension
``doc._.prompt`` (a name from ``prompt_names`` or an index; ``None`` = the
first); every window of the Doc uses it, and a batch may mix prompts.

Saving: weights are safetensors inside the pipe's ``model`` file.  With
``save_backbone = false`` (needs ``freeze_backbone = true``) only the prompt,
tokenizer and configs are saved, plus ``backbone_ref`` = the backbone's name,
resolved path and SHA-256 (over its state dict).  Loading looks for the
backbone at the configured ``name``, then the saved name, then the saved path
(local folder, installed package with a ``model`` folder, or hub name), refuses
a checksum mismatch (``BackboneChecksumError``) and shares one backbone module
between pipelines in the process (``load_backbone``/``load_verified_backbone``).
"""
from .backbone import (
    BackboneChecksumError,
    BackboneNotFoundError,
    backbone_checksum,
    clear_backbone_cache,
    load_backbone,
    load_verified_backbone,
    resolve_backbone,
)
from .layer import (
    PROMPT_EXTENSION,
    EncoderSettings,
    SoftPromptShim,
    SoftPromptTransformerModel,
    build_encoder,
    hard_prompt_block,
    install_prompt_extension,
)
from .model import PROMPT_MODULE_NAME, PromptedEncoder, supports_deep_prompts
from .prompts import PromptTable
from .serialization import CorruptModelError

__all__ = [
    "BackboneChecksumError",
    "BackboneNotFoundError",
    "CorruptModelError",
    "EncoderSettings",
    "PROMPT_EXTENSION",
    "PROMPT_MODULE_NAME",
    "PromptTable",
    "PromptedEncoder",
    "SoftPromptShim",
    "SoftPromptTransformerModel",
    "backbone_checksum",
    "build_encoder",
    "clear_backbone_cache",
    "hard_prompt_block",
    "install_prompt_extension",
    "load_backbone",
    "load_verified_backbone",
    "resolve_backbone",
    "supports_deep_prompts",
]
