"""``PromptedEncoder``: a Hugging Face encoder with soft / hard prompts.

The module owns one thing: ``(input_ids, attention_mask, token_type_ids,
prompt_ids) -> hidden states of the real tokens``.  Prompt rows (and hard
prompt wordpieces) are removed from the output, so the output has exactly the
shape of ``input_ids`` (plus the hidden dimension).

How the prompt enters the backbone
----------------------------------
* ``prompt_depth="input"``: ``inputs_embeds = [prompt ; word_embeddings(ids)]``.
  The real tokens' embeddings come from the word-embedding table only (never
  from the embedding *layer*, which adds positions/LayerNorm), and the whole
  sequence goes through the backbone's own embedding layer once.  Prompt rows
  get the position id of the first real token and token type 0.
* ``prompt_depth="deep"``: P-tuning v2 / prefix tuning.  Every layer receives
  ``P`` extra key/value vectors through the backbone's ``past_key_values``
  (prefix) mechanism; no query rows are added.
* Real tokens keep the position ids the plain model would give them
  (``0..L-1``; RoBERTa-style ``padding_idx+1..`` for RoBERTa-like models),
  shifted only by the hard prompt, so with the prompt masked out the output
  equals the plain model's.
* ``hard_prompt_ids`` (a natural-language prompt, tokenised without specials
  plus its separator) is inserted after each row's first token:
  ``[CLS] hard prompt [SEP] text [SEP]``, text rows get ``text_token_type_id``.

With ``prompt_length == 0`` and no hard prompt the backbone is called exactly
as spacy-transformers calls it (bit-identical output).
"""
import contextlib
import functools
import inspect
from typing import Any, Dict, List, Optional, Sequence

import numpy
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_outputs import BaseModelOutput

from ..compat import check_transformers
from .adapters import (
    DEFAULT_ADAPTER_TARGETS,
    adapter_state_dict,
    add_lora,
    base_state_dict,
    is_adapter_name,
    load_adapter_state,
)
from .backbone import check_backbone_dtype
from .prompts import (
    PROMPT_INITS,
    PromptTable,
    random_prompt_vectors,
    repeat_to_length,
    sample_vocab_ids,
)

PROMPT_DEPTHS = ("input", "deep")
#: default :attr:`PromptedEncoder.inference_chunk_rows`
INFERENCE_CHUNK_ROWS = 64
#: default :attr:`PromptedEncoder.inference_padding_tolerance` per device type: on CPU
#: 3% (about 9% more words per CPU second than 10% on the main job's pipeline,
#: `bench speed`; 1-2% gives no more), on a GPU 10% (fewer, larger calls)
INFERENCE_PADDING_TOLERANCE = {"cpu": 0.03, "cuda": 0.1}
#: default :attr:`PromptedEncoder.inference_chunk_positions` per device type: on CPU at
#: most 2,048 positions per backbone call (rows x longest row; the bare forward is
#: fastest at 16 windows of 128 per call, `bench speed`), on a GPU no limit
INFERENCE_CHUNK_POSITIONS = {"cpu": 2048, "cuda": 0}
#: default :attr:`PromptedEncoder.inference_key_alignment` per device type: on CPU a deep
#: prompt's keys are padded with masked zero keys so that prompt + window is a multiple of
#: 16 keys (torch's CPU flash attention takes 0.7-0.85x the time at such lengths that it
#: takes at the odd ones just under them, `bench speed --unaligned-keys`); on a GPU off. Only for backbones
#: whose attention runs through torch's SDPA (BERT, RoBERTa); MegatronBert's eager attention
#: would only do the extra keys' work
INFERENCE_KEY_ALIGNMENT = {"cpu": 16, "cuda": 0}
#: Name of the prompt sub-module; every prompt parameter's name contains this
#: segment (``prompt_encoder.table`` ...).  The PromptAdam optimizer keys on it.
PROMPT_MODULE_NAME = "prompt_encoder"
AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The transformer layer list of a BERT-family backbone."""
    encoder = getattr(backbone, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"cannot find the encoder layers of {type(backbone).__name__} (expected backbone.encoder.layer)"
        )
    return layers


def _self_attention(layer: nn.Module) -> nn.Module:
    attention = getattr(getattr(layer, "attention", None), "self", None)
    if attention is None or not hasattr(attention, "key") or not hasattr(attention, "value"):
        raise ValueError(
            f"deep prompts need layer.attention.self.key/value projections; {type(layer).__name__} has none"
        )
    return attention


def supports_deep_prompts(backbone: nn.Module) -> bool:
    """True when every self-attention takes prefix key/values (``past_key_value``)."""
    try:
        for layer in encoder_layers(backbone):
            attention = _self_attention(layer)
            if "past_key_value" not in inspect.signature(type(attention).forward).parameters:
                return False
    except ValueError:
        return False
    return True


def _cuda_autocast_enabled() -> bool:
    try:
        return bool(torch.is_autocast_enabled("cuda"))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_enabled())


def _checkpointed_forward(layer: nn.Module, *args, **kwargs):
    fn = type(layer).forward
    if torch.is_grad_enabled():
        return checkpoint(fn, layer, *args, use_reentrant=False, **kwargs)
    return fn(layer, *args, **kwargs)


def enable_layer_checkpointing(backbone: nn.Module) -> None:
    """Activation checkpointing per encoder layer (non-reentrant).

    We do not rely on ``backbone.gradient_checkpointing_enable()`` alone: HF's
    checkpointing only runs in train mode (a frozen backbone is kept in eval
    mode) and drops ``past_key_value`` passed by keyword (BERT), which would
    silently remove deep prompts.  This wrapper checkpoints whenever autograd is
    recording, passes all arguments through, and keeps parameter names intact.
    """
    for layer in encoder_layers(backbone):
        if not isinstance(layer.__dict__.get("forward"), functools.partial):
            layer.forward = functools.partial(_checkpointed_forward, layer)


def length_chunks(
    extents: numpy.ndarray, max_rows: int = 0, tolerance: float = 0.1, max_positions: int = 0
) -> List[numpy.ndarray]:
    """Row indices grouped for inference: rows sorted by ``extents`` (real
    wordpieces, padding excluded), a chunk grows while it holds at most
    ``max_rows`` rows (0: no limit), cutting it to its longest row pads it by
    at most ``tolerance`` times its real wordpieces, and its rows x longest row
    stay within ``max_positions`` (0: no limit; a single row may pass it)."""
    extents = numpy.asarray(extents, dtype="int64").reshape(-1)
    order = numpy.argsort(extents, kind="stable")
    chunks: List[numpy.ndarray] = []
    start, real = 0, 0
    for position, row in enumerate(order):
        length = int(extents[row])
        rows = position - start + 1
        if rows > 1 and (
            (max_rows and rows > max_rows)
            or (max_positions and length * rows > max_positions)
            or length * rows > (1.0 + tolerance) * (real + length)
        ):
            chunks.append(order[start:position])
            start, real = position, 0
        real += length
    if start < len(order):
        chunks.append(order[start:])
    return chunks


def _device_default(value, defaults: Dict[str, Any], device: str):
    """``value``, or when it is None the device type's entry of ``defaults`` (others: ``"cuda"``'s)."""
    return defaults.get(device, defaults["cuda"]) if value is None else value


def _take_rows(tensor: Optional[torch.Tensor], index: torch.Tensor, width: int) -> Optional[torch.Tensor]:
    if tensor is None:
        return None
    rows = tensor.index_select(0, index)
    return rows[:, :width] if rows.dim() > 1 else rows


def _scatter_rows(parts, shape) -> torch.Tensor:
    """``[B, L, H]`` from chunks ``(row index, width, [n, width, H])``; padding columns are 0."""
    first = parts[0][2]
    out = first.new_empty((shape[0], shape[1], first.shape[-1]))  # every element written once below
    for index, width, hidden in parts:
        out[index, :width] = hidden
        if width < shape[1]:
            out[index, width:] = 0
    return out


class PromptedEncoder(nn.Module):
    """A backbone (``transformers.PreTrainedModel``) plus named prompts.

    Args:
        backbone: a BERT-family ``AutoModel`` (MegatronBert/GatorTron, BERT,
            RoBERTa, DeBERTa-v2 for input prompts).
        prompt_length: P, the number of soft prompt vectors (0: none).
        prompt_depth: ``"input"`` or ``"deep"``.
        prompt_names: names of the prompts sharing the backbone; rows choose
            one with ``prompt_ids`` (index into this list).
        reparameterize: train the prompt through an MLP (prefix projection);
            folded into a plain table by :meth:`fold_reparameterization`.
        reparameterize_hidden_size: the MLP's hidden width.
        hard_prompt_ids: token ids inserted after each row's first token
            (hard prompt wordpieces + separator(s)); ``None``/empty: none.
        text_token_type_id: token type of the text segment with a hard prompt.
        freeze_backbone: ``requires_grad_(False)`` + eval mode for the backbone
            (its adapters, if any, stay trainable).
        adapter_rank: rank of LoRA adapters injected into the backbone's
            projections (0: none; see :mod:`.adapters`).
        adapter_alpha: LoRA scaling numerator (updates are scaled by alpha / rank).
        adapter_targets: regular expression naming the modules that get adapters.
        gradient_checkpointing: per-layer activation checkpointing.
        autocast_dtype: ``"float16"``/``"bfloat16"``: dtype used inside the
            backbone when the caller enabled CUDA autocast (thinc's
            ``mixed_precision``); ``None``: keep the caller's autocast dtype.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        prompt_length: int = 0,
        prompt_depth: str = "input",
        prompt_names: Sequence[str] = ("default",),
        reparameterize: bool = False,
        reparameterize_hidden_size: int = 512,
        hard_prompt_ids: Optional[Sequence[int]] = None,
        text_token_type_id: int = 1,
        freeze_backbone: bool = False,
        gradient_checkpointing: bool = False,
        autocast_dtype: Optional[str] = None,
        adapter_rank: int = 0,
        adapter_alpha: float = 16.0,
        adapter_targets: str = DEFAULT_ADAPTER_TARGETS,
        backbone_dtype: str = "float32",
    ):
        super().__init__()
        check_transformers()  # a clear error before transformers 5's attention sees a tuple prefix
        if prompt_depth not in PROMPT_DEPTHS:
            raise ValueError(f"prompt_depth must be one of {PROMPT_DEPTHS}, got {prompt_depth!r}")
        names = list(prompt_names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"prompt_names must be unique non-empty strings, got {names!r}")
        if prompt_length < 0:
            raise ValueError(f"prompt_length must be >= 0, got {prompt_length}")
        if autocast_dtype is not None and autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast dtype must be one of {sorted(AUTOCAST_DTYPES)} or None, got {autocast_dtype!r}")
        if adapter_rank < 0:
            raise ValueError(f"adapter_rank must be >= 0, got {adapter_rank}")
        weights_dtype = check_backbone_dtype(backbone_dtype, adapter_rank)
        current = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), weights_dtype)
        if current != weights_dtype:
            backbone.to(weights_dtype)  # a private module (a shared one is loaded in its dtype)
        self.backbone_dtype = backbone_dtype
        self.adapter_rank = int(adapter_rank)
        self.adapter_alpha = float(adapter_alpha)
        self.adapter_targets = str(adapter_targets)
        if self.adapter_rank:
            add_lora(backbone, rank=self.adapter_rank, alpha=self.adapter_alpha, targets=self.adapter_targets)
            backbone.requires_grad_(True)  # PEFT freezes the rest; freezing is freeze_backbone's call
        self.backbone = backbone
        config = backbone.config
        self._hidden_size = int(config.hidden_size)
        self._num_layers = int(config.num_hidden_layers)
        self._num_heads = int(config.num_attention_heads)
        self._prompt_names = names
        self.prompt_length = int(prompt_length)
        self.prompt_depth = prompt_depth
        self.hard_prompt_ids = [int(i) for i in (hard_prompt_ids or [])]
        type_vocab = int(getattr(config, "type_vocab_size", 0) or 0)
        self.text_token_type_id = int(min(max(text_token_type_id, 0), max(type_vocab - 1, 0)))
        self.autocast_dtype = autocast_dtype
        embeddings = getattr(backbone, "embeddings", None)
        # RoBERTa-like embeddings number positions from padding_idx + 1.
        self._pad_aware_positions = hasattr(embeddings, "create_position_ids_from_inputs_embeds") and hasattr(
            embeddings, "padding_idx"
        )
        self._padding_idx = int(embeddings.padding_idx) if self._pad_aware_positions else 0
        if self.prompt_length and prompt_depth == "deep" and not supports_deep_prompts(backbone):
            raise ValueError(
                f"prompt_depth='deep' needs a backbone whose self-attention accepts prefix key/values "
                f"(BERT, MegatronBert/GatorTron, RoBERTa); {type(backbone).__name__} does not. "
                "Use prompt_depth='input'."
            )
        width = self._hidden_size * (2 * self._num_layers if prompt_depth == "deep" else 1)
        self.prompt_encoder = PromptTable(
            len(names),
            self.prompt_length,
            width,
            reparameterize=reparameterize,
            hidden_size=reparameterize_hidden_size,
            input_width=self._hidden_size,
        )
        first = next(backbone.parameters(), None)
        if first is not None:
            self.prompt_encoder.to(device=first.device)
        self.reparameterize_hidden_size = int(reparameterize_hidden_size)
        if self.max_text_length < 4:
            raise ValueError(
                f"no room left for text: max_position_embeddings={self.max_positions}, prompt_length="
                f"{self.prompt_length}, hard prompt={len(self.hard_prompt_ids)} wordpieces"
            )
        self._backbone_frozen = False
        self._gradient_checkpointing = False
        #: rows per backbone call when no gradient is needed (inference): a long
        #: note's windows go through in chunks, so activation memory stays bounded
        #: by the chunk, not the note; 0 = all rows at once.  Not saved.
        self.inference_chunk_rows = INFERENCE_CHUNK_ROWS
        #: without gradients, rows are sorted by length and grouped so that a
        #: chunk's padding stays under this share of its real wordpieces
        #: (each chunk is cut to its longest row); ``None``: the device's
        #: default (:data:`INFERENCE_PADDING_TOLERANCE`).  Not saved.
        self.inference_padding_tolerance: Optional[float] = None
        #: without gradients, a chunk also stops growing before its rows x longest
        #: row would pass this many positions (prompts excluded; 0 = no limit);
        #: ``None``: the device's default (:data:`INFERENCE_CHUNK_POSITIONS`).  Not saved.
        self.inference_chunk_positions: Optional[int] = None
        #: without gradients, a deep prompt's keys get masked zero keys after them so that
        #: prompt + row width is a multiple of this (0 = none; the output is the same);
        #: ``None``: the device's default (:data:`INFERENCE_KEY_ALIGNMENT`) when the backbone's
        #: attention is SDPA, else 0.  Not saved.
        self.inference_key_alignment: Optional[int] = None
        if freeze_backbone:
            self.freeze_backbone()
        if gradient_checkpointing:
            self.enable_gradient_checkpointing()

    # ------------------------------------------------------------------ info
    @property
    def config(self):
        """The backbone's ``PretrainedConfig`` (so HF-style code keeps working)."""
        return self.backbone.config

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self._hidden_size

    @property
    def prompt_names(self) -> List[str]:
        return list(self._prompt_names)

    @property
    def max_positions(self) -> int:
        """Usable position ids of the backbone."""
        offset = self._padding_idx + 1 if self._pad_aware_positions else 0
        return int(self.backbone.config.max_position_embeddings) - offset

    @property
    def hard_prompt_length(self) -> int:
        return len(self.hard_prompt_ids)

    @property
    def max_text_length(self) -> int:
        """Longest ``input_ids`` row (its own specials included) that fits:
        ``max_position_embeddings - P - hard prompt wordpieces``."""
        return self.max_positions - self.prompt_length - self.hard_prompt_length

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    @property
    def gradient_checkpointing(self) -> bool:
        return self._gradient_checkpointing

    def prompt_index(self, name: str) -> int:
        try:
            return self._prompt_names.index(name)
        except ValueError:
            raise ValueError(f"unknown prompt {name!r}; this encoder has prompts {self._prompt_names}") from None

    def prompt_parameters(self) -> List[nn.Parameter]:
        """The prompt's trainable parameters (table, or input table + MLP)."""
        return list(self.prompt_encoder.parameters())

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def get_config(self) -> Dict[str, Any]:
        """Settings to rebuild this module around the same backbone."""
        return {
            "prompt_length": self.prompt_length,
            "prompt_depth": self.prompt_depth,
            "prompt_names": self.prompt_names,
            "reparameterize": self.prompt_encoder.reparameterize,
            "reparameterize_hidden_size": self.reparameterize_hidden_size,
            "hard_prompt_ids": list(self.hard_prompt_ids),
            "text_token_type_id": self.text_token_type_id,
            "freeze_backbone": self._backbone_frozen,
            "gradient_checkpointing": self._gradient_checkpointing,
            "autocast_dtype": self.autocast_dtype,
            "adapter_rank": self.adapter_rank,
            "adapter_alpha": self.adapter_alpha,
            "adapter_targets": self.adapter_targets,
            "backbone_dtype": self.backbone_dtype,
        }

    # --------------------------------------------------------- freezing etc.
    def freeze_backbone(self) -> None:
        """No gradients, no optimizer state, no dropout for the backbone's
        pretrained weights; its adapters (if any) stay trainable."""
        for name, param in self.backbone.named_parameters():
            trainable = is_adapter_name(name)
            param.requires_grad_(trainable)
            if not trainable:
                param.grad = None
        self._backbone_frozen = True
        self.backbone.eval()

    def unfreeze_backbone(self) -> None:
        for param in self.backbone.parameters():
            param.requires_grad_(True)
        self._backbone_frozen = False
        self.backbone.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()
        return self

    def enable_gradient_checkpointing(self) -> None:
        enable_layer_checkpointing(self.backbone)
        self._gradient_checkpointing = True

    # ------------------------------------------------------------ adapters
    def base_backbone_state(self) -> Dict[str, torch.Tensor]:
        """The pretrained backbone's state under its plain names (no adapters)."""
        return base_state_dict(self.backbone)

    def export_adapter_state(self) -> Dict[str, torch.Tensor]:
        """The adapter weights (empty without adapters), on CPU."""
        return adapter_state_dict(self.backbone) if self.adapter_rank else {}

    def load_adapter_state(self, state: Dict[str, torch.Tensor]) -> None:
        if not self.adapter_rank:
            if state:
                raise ValueError("saved adapters given to an encoder built without adapters (adapter_rank = 0)")
            return
        load_adapter_state(self.backbone, state)

    # ------------------------------------------------------------- prompts
    def export_prompt_state(self) -> Dict[str, torch.Tensor]:
        """The prompt as a plain table (reparameterisation folded), on CPU."""
        table = self.prompt_encoder.folded().table.detach()
        return {"table": table.cpu().contiguous()}

    def load_prompt_state(self, state: Dict[str, torch.Tensor]) -> None:
        """Load a plain table from :meth:`export_prompt_state` (folds first)."""
        self.fold_reparameterization()
        table = state["table"]
        if tuple(table.shape) != tuple(self.prompt_encoder.table.shape):
            raise ValueError(
                f"saved prompt table has shape {tuple(table.shape)}, this encoder expects "
                f"{tuple(self.prompt_encoder.table.shape)}"
            )
        with torch.no_grad():
            self.prompt_encoder.table.copy_(table.to(self.prompt_encoder.table.device))

    def fold_reparameterization(self) -> None:
        """Replace the reparameterisation MLP by the plain table it produces."""
        if self.prompt_encoder.reparameterize:
            self.prompt_encoder = self.prompt_encoder.folded()

    @torch.no_grad()
    def init_prompts(
        self,
        method: str = "vocab",
        *,
        token_ids: Optional[Sequence[Sequence[int]]] = None,
        num_real_tokens: Optional[int] = None,
        exclude_ids: Sequence[int] = (),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        """Initialise every prompt.

        * ``"text"``: ``token_ids[i]`` (one id list per prompt, no specials) is
          repeated/truncated to P and embedded with the word-embedding table.
        * ``"vocab"``: P distinct rows sampled from the real vocabulary
          (``num_real_tokens`` rows, GatorTron's table has padding rows beyond),
          skipping ``exclude_ids`` (special tokens).
        * ``"random"``: Gaussian, scaled to the per-dimension mean/std of the
          real rows of the word-embedding table.

        Input prompts are these vectors.  Deep prompts (without
        reparameterisation) are the keys/values each layer computes when the
        backbone reads these vectors as a P-token input (positions 0..P-1), i.e.
        the prefix a hard prompt of that text would produce; a reparameterised
        prompt stores the vectors in the MLP's input table instead.
        """
        if method not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {PROMPT_INITS}, got {method!r}")
        P, n = self.prompt_length, len(self._prompt_names)
        if P == 0:
            return
        embedding = self.backbone.get_input_embeddings().weight.detach()
        if num_real_tokens is None:
            num_real_tokens = embedding.shape[0]
        if method == "random":
            vectors = random_prompt_vectors(
                embedding, n, P, num_real_tokens=num_real_tokens, generator=generator
            )
        else:
            if method == "text":
                if token_ids is None or len(token_ids) != n:
                    raise ValueError("prompt_init='text' needs one token id list per prompt")
                ids = [repeat_to_length(t, P) for t in token_ids]
            else:
                ids = [
                    sample_vocab_ids(P, num_real_tokens, exclude_ids=exclude_ids, generator=generator)
                    for _ in range(n)
                ]
            index = torch.tensor(ids, dtype=torch.long, device=embedding.device)
            if int(index.max()) >= min(num_real_tokens, embedding.shape[0]):
                raise ValueError("prompt init token id outside the real vocabulary")
            vectors = embedding[index]
        vectors = vectors.to(self.prompt_encoder.full().dtype)
        if self.prompt_depth == "deep" and not self.prompt_encoder.reparameterize:
            vectors = self._vectors_to_prefix(vectors)
        self.prompt_encoder.set_input_vectors(vectors.to(next(self.prompt_encoder.parameters()).device))

    @torch.no_grad()
    def _vectors_to_prefix(self, vectors: torch.Tensor) -> torch.Tensor:
        """Run ``[n, P, H]`` input vectors through the backbone, collecting each
        layer's key/value projections: ``[n, P, layers*2*H]``."""
        n, P, H = vectors.shape
        captured: Dict[int, torch.Tensor] = {}
        handles = []
        for i, layer in enumerate(encoder_layers(self.backbone)):
            attention = _self_attention(layer)
            for j, proj in enumerate((attention.key, attention.value)):
                slot = 2 * i + j

                def hook(_module, _inputs, output, slot=slot):
                    captured[slot] = output.detach()

                handles.append(proj.register_forward_hook(hook))
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            device = self.device
            positions = torch.arange(P, device=device).unsqueeze(0).expand(n, P)
            if self._pad_aware_positions:
                positions = positions + self._padding_idx + 1
            self.backbone(
                inputs_embeds=vectors.to(device=device, dtype=self.backbone.get_input_embeddings().weight.dtype),
                attention_mask=torch.ones((n, P), device=device, dtype=torch.long),
                token_type_ids=torch.zeros((n, P), device=device, dtype=torch.long),
                position_ids=positions,
                return_dict=True,
            )
        finally:
            for handle in handles:
                handle.remove()
            self.backbone.train(was_training and not self._backbone_frozen)
        slots = [captured[s] for s in range(2 * self._num_layers)]
        return torch.stack(slots, dim=2).reshape(n, P, 2 * self._num_layers * H)

    # ------------------------------------------------------------- forward
    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None or device.type != "cuda" or not _cuda_autocast_enabled():
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[self.autocast_dtype])

    def _check_prompt_ids(
        self, prompt_ids: Optional[torch.Tensor], batch: int, device, check_values: bool = True
    ) -> torch.Tensor:
        """``prompt_ids`` as a long tensor on ``device`` (zeros when ``None``);
        ``check_values``: refuse ids outside :attr:`prompt_names` (one host sync)."""
        if prompt_ids is None:
            return torch.zeros((batch,), dtype=torch.long, device=device)
        prompt_ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=device).reshape(-1)
        if prompt_ids.shape[0] != batch:
            raise ValueError(f"prompt_ids has {prompt_ids.shape[0]} entries for {batch} rows")
        if check_values and batch and bool(self._bad_prompt_ids(prompt_ids)):
            raise ValueError(f"prompt_ids must index prompt_names {self._prompt_names}")
        return prompt_ids

    def _bad_prompt_ids(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """0-d bool tensor (on the ids' device, no sync): some id is outside :attr:`prompt_names`."""
        return ((prompt_ids < 0) | (prompt_ids >= len(self._prompt_names))).any()

    def _position_ids(self, ids: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        if self._pad_aware_positions:
            mask = ids.ne(self._padding_idx).int()
            return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self._padding_idx
        return torch.arange(length, device=ids.device).unsqueeze(0).expand(batch, length)

    def _insert_hard_prompt(self, ids, mask):
        batch = ids.shape[0]
        K = len(self.hard_prompt_ids)
        block = torch.tensor(self.hard_prompt_ids, dtype=ids.dtype, device=ids.device).unsqueeze(0).expand(batch, K)
        new_ids = torch.cat([ids[:, :1], block, ids[:, 1:]], dim=1)
        new_mask = torch.cat([mask[:, :1], torch.ones((batch, K), dtype=mask.dtype, device=mask.device), mask[:, 1:]], 1)
        text_types = torch.full_like(ids[:, 1:], self.text_token_type_id)
        head_types = torch.zeros((batch, K + 1), dtype=ids.dtype, device=ids.device)
        return new_ids, new_mask, torch.cat([head_types, text_types], dim=1)

    def _prefix(
        self, prompt_ids: torch.Tensor, dtype: torch.dtype, shared_kv: Optional[torch.Tensor] = None, zero_keys: int = 0
    ):
        """Per-layer ``(key, value)`` prefixes, each ``[B, heads, P + zero_keys, head_dim]``. ``shared_kv``:
        :meth:`_shared_kv`'s tensor, looked up once for all chunks of an inference batch;
        ``zero_keys``: zero rows after the prompt's (the attention mask hides them), added to
        the table before it is expanded over the rows."""
        batch = prompt_ids.shape[0]
        shared = len(self._prompt_names) == 1 and batch > 1  # every row has prompt 0: look it up once
        if shared_kv is not None:
            kv = shared_kv
        else:
            kv = self._kv(self.prompt_encoder(prompt_ids[:1] if shared else prompt_ids).to(dtype))
        if zero_keys:
            kv = torch.cat([kv, kv.new_zeros(kv.shape[:4] + (zero_keys, kv.shape[5]))], dim=4)
        if shared or shared_kv is not None:  # a view per layer, not B copies of the prompt (the attention concatenates anyway)
            kv = kv.expand(-1, -1, batch, -1, -1, -1)
        return tuple((kv[i, 0], kv[i, 1]) for i in range(self._num_layers))

    def _kv(self, flat: torch.Tensor) -> torch.Tensor:
        """``[layers, k|v, B, heads, P, head_dim]`` view of the prompt encoder's output."""
        head_dim = self._hidden_size // self._num_heads
        kv = flat.view(flat.shape[0], self.prompt_length, self._num_layers, 2, self._num_heads, head_dim)
        return kv.permute(2, 3, 0, 4, 1, 5)

    def _shared_kv(self, device: torch.device) -> Optional[torch.Tensor]:
        """The one prompt's key/value table (batch 1) when every row has the same prompt and it
        is deep, else ``None``."""
        if self.prompt_length == 0 or self.prompt_depth == "input" or len(self._prompt_names) != 1:
            return None
        with self._autocast(device):
            ids = torch.zeros((1,), dtype=torch.long, device=device)
            return self._kv(self.prompt_encoder(ids).to(self._compute_dtype(device)))

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        """dtype of the keys/values the prefix is concatenated with."""
        if device.type == "cuda" and _cuda_autocast_enabled():
            try:
                return torch.get_autocast_dtype("cuda")
            except AttributeError:  # torch < 2.4
                return torch.get_autocast_gpu_dtype()
        return self.backbone.get_input_embeddings().weight.dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        prompt_ids: Optional[torch.Tensor] = None,
        *,
        mask_prompt: bool = False,
        output_hidden_states: Optional[bool] = None,
    ) -> BaseModelOutput:
        """Hidden states of the real tokens, ``last_hidden_state: [B, L, H]``.

        ``prompt_ids[b]`` indexes :attr:`prompt_names` (default: all 0), so a
        batch may mix prompts in one forward.  ``mask_prompt=True`` zeroes the
        attention to soft prompt rows (a diagnostic: the output then equals
        the backbone's without prompt).  Without gradients, rows run sorted
        by length in chunks of at most :attr:`inference_chunk_rows` rows, each
        cut to its longest row (:func:`length_chunks`); padding positions of
        the output are then 0.  Without any prompt (P = 0, no hard prompt) rows
        keep their order and padding (chunks of :attr:`inference_chunk_rows`).
        """
        batch = input_ids.shape[0]
        if torch.is_grad_enabled() or batch == 0:
            return self._forward_rows(
                input_ids, attention_mask, token_type_ids, prompt_ids, mask_prompt, output_hidden_states
            )
        if self.prompt_length == 0 and not self.hard_prompt_ids:
            return self._forward_in_row_chunks(
                input_ids, attention_mask, token_type_ids, prompt_ids, mask_prompt, output_hidden_states
            )
        return self._forward_by_length(
            input_ids, attention_mask, token_type_ids, prompt_ids, mask_prompt, output_hidden_states
        )

    def _forward_by_length(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor],
        prompt_ids: Optional[torch.Tensor],
        mask_prompt: bool,
        output_hidden_states: Optional[bool],
    ) -> BaseModelOutput:
        """Inference: rows sorted by length, in chunks cut to their longest row (:func:`length_chunks`)."""
        batch = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prompt_ids = self._check_prompt_ids(prompt_ids, batch, input_ids.device, check_values=False)
        # one host copy per batch: each row's extent (last real column + 1) and the prompt id check
        columns = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
        extents = (attention_mask.ne(0) * columns).amax(dim=1)
        on_host = torch.cat([extents, self._bad_prompt_ids(prompt_ids).long().view(1)]).cpu().numpy()
        if on_host[-1]:
            raise ValueError(f"prompt_ids must index prompt_names {self._prompt_names}")
        extents = on_host[:-1]
        device = input_ids.device.type
        tolerance = _device_default(self.inference_padding_tolerance, INFERENCE_PADDING_TOLERANCE, device)
        positions = _device_default(self.inference_chunk_positions, INFERENCE_CHUNK_POSITIONS, device)
        alignment = self.inference_key_alignment
        if alignment is None:
            sdpa = getattr(self.backbone.config, "_attn_implementation", None) == "sdpa"
            alignment = _device_default(None, INFERENCE_KEY_ALIGNMENT, device) if sdpa else 0
        chunks = length_chunks(extents, self.inference_chunk_rows, tolerance, positions)
        if len(chunks) == 1 and int(extents.max(initial=0)) == input_ids.shape[1] and chunks[0].size == batch:
            if bool((chunks[0] == numpy.arange(batch)).all()):
                return self._forward_rows(
                    input_ids, attention_mask, token_type_ids, prompt_ids, mask_prompt, output_hidden_states,
                    prompt_ids_checked=True, key_alignment=alignment,
                )
        parts = []
        shared_kv = self._shared_kv(input_ids.device)  # looked up once, not once per chunk
        for rows in chunks:
            width = max(int(extents[rows].max()), 1)
            index = torch.as_tensor(rows, device=input_ids.device)
            tensors = (input_ids, attention_mask, token_type_ids, prompt_ids)
            chunk = [_take_rows(t, index, width) for t in tensors]
            part = self._forward_rows(
                *chunk, mask_prompt, output_hidden_states, prompt_ids_checked=True, shared_kv=shared_kv,
                key_alignment=alignment,
            )
            parts.append((index, width, part))
        return BaseModelOutput(
            last_hidden_state=_scatter_rows([(i, w, p.last_hidden_state) for i, w, p in parts], input_ids.shape),
            hidden_states=None
            if parts[0][2].hidden_states is None
            else tuple(
                _scatter_rows([(i, w, p.hidden_states[layer]) for i, w, p in parts], input_ids.shape)
                for layer in range(len(parts[0][2].hidden_states))
            ),
        )

    def _forward_in_row_chunks(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        prompt_ids: Optional[torch.Tensor] = None,
        mask_prompt: bool = False,
        output_hidden_states: Optional[bool] = None,
    ) -> BaseModelOutput:
        """Without a prompt: chunks of :attr:`inference_chunk_rows` rows in order, each
        called exactly as spacy-transformers calls the backbone (bit-identical output)."""
        rows, batch = self.inference_chunk_rows, input_ids.shape[0]
        tensors = (input_ids, attention_mask, token_type_ids, prompt_ids)
        if not rows or batch <= rows:
            return self._forward_rows(*tensors, mask_prompt, output_hidden_states)
        parts = [
            self._forward_rows(*[t[start : start + rows] if t is not None else None for t in tensors], mask_prompt, output_hidden_states)
            for start in range(0, batch, rows)
        ]
        hidden_states = None
        if parts[0].hidden_states is not None:
            hidden_states = tuple(torch.cat(layer, dim=0) for layer in zip(*(p.hidden_states for p in parts)))
        return BaseModelOutput(
            last_hidden_state=torch.cat([p.last_hidden_state for p in parts], dim=0), hidden_states=hidden_states
        )

    def _forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor],
        prompt_ids: Optional[torch.Tensor],
        mask_prompt: bool,
        output_hidden_states: Optional[bool],
        prompt_ids_checked: bool = False,
        shared_kv: Optional[torch.Tensor] = None,
        key_alignment: int = 0,
    ) -> BaseModelOutput:
        """One backbone call. ``key_alignment`` (deep prompts): masked zero keys after the
        prompt's, up to a multiple of it with the row width (same output, faster kernels)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch = input_ids.shape[0]
        P, K = self.prompt_length, len(self.hard_prompt_ids)
        extra: Dict[str, Any] = {"return_dict": True}
        if output_hidden_states is not None:
            extra["output_hidden_states"] = output_hidden_states
        with self._autocast(input_ids.device):
            if P == 0 and K == 0:
                self._check_prompt_ids(prompt_ids, batch, input_ids.device, not prompt_ids_checked)
                out = self.backbone(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **extra
                )
                return self._output(out, 0, 0)
            prompt_ids = self._check_prompt_ids(prompt_ids, batch, input_ids.device, not prompt_ids_checked)
            ids, mask, types = input_ids, attention_mask, token_type_ids
            if K:
                ids, mask, types = self._insert_hard_prompt(ids, mask)
            if types is None:
                types = torch.zeros_like(ids)
            positions = self._position_ids(ids)
            zero_keys = (-(P + ids.shape[1])) % key_alignment if P and key_alignment and self.prompt_depth == "deep" else 0
            if P:
                fill = 0 if mask_prompt else 1
                prompt_mask = torch.full((batch, P), fill, dtype=mask.dtype, device=mask.device)
                if zero_keys:
                    prompt_mask = torch.cat([prompt_mask, prompt_mask.new_zeros((batch, zero_keys))], dim=1)
                mask = torch.cat([prompt_mask, mask], dim=1)
            if P and self.prompt_depth == "input":
                word_embeddings = self.backbone.get_input_embeddings()
                embeds = word_embeddings(ids)
                prompts = self.prompt_encoder(prompt_ids).to(embeds.dtype)
                out = self.backbone(
                    inputs_embeds=torch.cat([prompts, embeds], dim=1),
                    attention_mask=mask,
                    token_type_ids=torch.cat([torch.zeros((batch, P), dtype=types.dtype, device=types.device), types], 1),
                    position_ids=torch.cat([positions[:, :1].expand(batch, P), positions], dim=1),
                    **extra,
                )
                return self._output(out, P, K)
            past = self._prefix(prompt_ids, self._compute_dtype(ids.device), shared_kv, zero_keys) if P else None
            out = self.backbone(
                input_ids=ids,
                attention_mask=mask,
                token_type_ids=types,
                position_ids=positions,
                past_key_values=past,
                **extra,
            )
            return self._output(out, 0, K)

    @staticmethod
    def _strip(hidden: torch.Tensor, strip: int, K: int) -> torch.Tensor:
        if strip:
            hidden = hidden[:, strip:]
        if K:
            hidden = torch.cat([hidden[:, :1], hidden[:, 1 + K :]], dim=1)
        if hidden.dtype != torch.float32 and hidden.is_floating_point():
            hidden = hidden.float()
        return hidden

    def _output(self, out, strip: int, K: int) -> BaseModelOutput:
        hidden_states = getattr(out, "hidden_states", None)
        if hidden_states is not None:
            hidden_states = tuple(self._strip(h, strip, K) for h in hidden_states)
        return BaseModelOutput(last_hidden_state=self._strip(out.last_hidden_state, strip, K), hidden_states=hidden_states)
