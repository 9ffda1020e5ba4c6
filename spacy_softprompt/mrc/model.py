"""The MRC span model: a :class:`~spacy_softprompt.encoder.PromptedEncoder` with
start / end / span-match heads, as a thinc model (``spacy_softprompt.MRCSpanModel.v1``).

Torch side (:class:`MRCSpanModule`)
-----------------------------------
``rows -> encoder(input_ids, attention_mask, token_type_ids, prompt_ids)`` in
**one** forward for all rows of a batch (each row picks its label's prompt with
``prompt_ids``), then

* start logits ``Linear(H, 1)`` and end logits ``Linear(H, 1)`` per wordpiece;
* a span-match scorer on ``[h_start; h_end]``: ``Linear(2H, d) -> GELU ->
  Linear(d, 1)``, computed as ``A h_start + B h_end`` so that only candidate
  pairs are ever materialised (see :mod:`.decoding`);
* loss = ``w_s BCE(start) + w_e BCE(end) + w_m BCE(match)`` (MRC-NER), gold
  start/end positions and pairs optionally up-weighted (``loss_weights["positive"]``);
  the start/end biases start at the logit of :data:`BOUNDARY_PRIOR`.

thinc side
----------
The model's input is an :class:`~.rows.MRCRows` batch.  ``predict``
returns ``{"spans": int64[N, 3] (row, start position, end position),
"probs": float32[N]}``; ``begin_update`` (rows must carry ``gold``) returns
``{"loss": float, ...}`` and a backprop callback taking ``d_loss`` (normally
1.0).  The encoder and tokenizer are built by ``initialize`` once the owning
component has set ``model.attrs["labels"]`` (the prompt names: one prompt per
label) and, optionally, ``model.attrs["prompt_texts"]`` (label -> text used by
``prompt_init = "text"``).

Frozen backbones (``freeze_backbone = true``) have ``requires_grad`` False and
stay in eval mode; only the prompts and the heads get gradients.  Frozen
backbones are shared between components/pipelines of one process (the encoder
package's backbone cache), and with ``save_backbone = false`` only the prompts,
the heads, the tokenizer and a reference to the backbone (name, path, SHA-256)
are saved, exactly like the transformer pipe's prompt-only saves.
"""
import copy
from typing import Any, Dict, List, Optional, Union, cast

import numpy
import srsly
import torch
from spacy.util import registry
from thinc.api import Model, get_torch_default_device, torch2xp, xp2torch
from thinc.shims.pytorch import PyTorchShim
from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler
from thinc.types import ArgsKwargs, FloatsXd
from torch import nn
from torch.nn import functional as F

from ..encoder.backbone import load_backbone, resolve_backbone
from ..encoder.layer import (
    EncoderSettings,
    SoftPromptShim,
    build_encoder,
    text_limit,
)
from ..encoder.model import PromptedEncoder
from ..encoder.serialization import shards_to_state, state_to_shards
from ..encoder.storage import encoder_from_msg, encoder_to_msg
from .decoding import decode_spans, logit, span_losses
from .rows import MRCRows, SpecialLayout

SERIALIZATION_FORMAT = "spacy-softprompt/mrc/1"
DEFAULT_OPTIONS = {
    "max_span_width": 10,
    "threshold": 0.5,
    "match_threshold": 0.5,
    "loss_weights": {"start": 1.0, "end": 1.0, "match": 1.0, "positive": 1.0},
    "max_match_candidates": None,
}
LOSS_WEIGHT_KEYS = tuple(DEFAULT_OPTIONS["loss_weights"])
#: Initial start/end probability of every position (the heads' bias): close to
#: the share of context words that start an entity of one type, so training
#: does not spend its first steps learning that almost nothing is a boundary.
BOUNDARY_PRIOR = 0.01


# --------------------------------------------------------------- torch
class MRCSpanModule(nn.Module):
    """Prompted encoder + start/end/match heads (see the module docstring)."""

    def __init__(self, encoder: PromptedEncoder, hidden_width: int = 256, dropout: float = 0.1):
        super().__init__()
        H = encoder.hidden_size
        self.encoder = encoder
        self.hidden_width = int(hidden_width)
        self.dropout_rate = float(dropout)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.start_head = nn.Linear(H, 1)
        self.end_head = nn.Linear(H, 1)
        self.match_start = nn.Linear(H, self.hidden_width)
        self.match_end = nn.Linear(H, self.hidden_width, bias=False)
        self.match_out = nn.Linear(self.hidden_width, 1)
        with torch.no_grad():
            self.start_head.bias.fill_(logit(BOUNDARY_PRIOR))
            self.end_head.bias.fill_(logit(BOUNDARY_PRIOR))
        self.to(device=encoder.device)

    def head_config(self) -> Dict[str, Any]:
        return {"hidden_width": self.hidden_width, "dropout": self.dropout_rate}

    def head_state(self) -> Dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def head_parameters(self) -> List[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        prompt_ids: torch.Tensor,
        start_mask: torch.Tensor,
        end_mask: torch.Tensor,
        word_index: torch.Tensor,
        *,
        gold: Optional[torch.Tensor] = None,
        max_span_width: int = 10,
        threshold: float = 0.5,
        match_threshold: float = 0.5,
        loss_weights: Optional[Dict[str, float]] = None,
        max_match_candidates: Optional[int] = None,
    ) -> Dict[str, torch.Tensor]:
        hidden = self.encoder(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, prompt_ids=prompt_ids
        ).last_hidden_state
        hidden = self.dropout(hidden)
        start_logits = self.start_head(hidden).squeeze(-1)
        end_logits = self.end_head(hidden).squeeze(-1)
        match_s = self.match_start(hidden)
        match_e = self.match_end(hidden)

        def match_fn(rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
            pair = F.gelu(match_s[rows, starts] + match_e[rows, ends])
            return self.match_out(self.dropout(pair)).squeeze(-1)

        if gold is not None:
            w = {**DEFAULT_OPTIONS["loss_weights"], **(loss_weights or {})}
            losses = span_losses(
                start_logits, end_logits, match_fn, start_mask, end_mask, word_index, gold, max_span_width,
                threshold=threshold, max_candidates=max_match_candidates, positive_weight=w["positive"],
            )
            loss = w["start"] * losses["start"] + w["end"] * losses["end"] + w["match"] * losses["match"]
            return {"loss": loss, **losses}
        spans, probs = decode_spans(
            start_logits, end_logits, match_fn, start_mask, end_mask, word_index, max_span_width,
            threshold=threshold, match_threshold=match_threshold,
        )
        return {"spans": spans, "probs": probs}


# ---------------------------------------------------------------- shim
class MRCShim(PyTorchShim):
    """PyTorchShim around an :class:`MRCSpanModule` with safetensors I/O
    (format ``spacy-softprompt/mrc/1``), prompt-only saves and partial
    ``use_params`` (the transformer shim's)."""

    use_params = SoftPromptShim.use_params

    def __init__(
        self,
        settings: Dict[str, Any],
        head_config: Dict[str, Any],
        tokenizer_config: Dict[str, Any],
        transformer_config: Dict[str, Any],
        mixed_precision: bool = False,
        grad_scaler_config: Optional[Dict[str, Any]] = None,
    ):
        grad_scaler_config = dict(grad_scaler_config or {})
        if "enabled" not in grad_scaler_config:
            grad_scaler_config["enabled"] = bool(mixed_precision) and settings.get("mixed_precision_dtype") == "float16"
        super().__init__(None, mixed_precision=mixed_precision, grad_scaler=PyTorchGradScaler(**grad_scaler_config))
        self.settings: Dict[str, Any] = dict(settings)  # EncoderSettings fields (prompt_names set at init)
        self.head_config = dict(head_config)
        self.tokenizer_config = dict(tokenizer_config or {})
        self.transformer_config = dict(transformer_config or {})
        self.tokenizer = None
        self.vocab_file_contents: Optional[bytes] = None
        self.backbone_ref: Dict[str, Any] = {"name": None, "path": None, "sha256": None}
        self.load_name: Optional[str] = None
        self._layout: Optional[SpecialLayout] = None

    @property
    def device(self):
        if self._model is None:
            return get_torch_default_device()
        return super().device

    @property
    def module(self) -> Optional[MRCSpanModule]:
        return self._model

    @property
    def layout(self) -> SpecialLayout:
        if self._layout is None:
            config = self._model.encoder.config
            self._layout = SpecialLayout.from_tokenizer(self.tokenizer, getattr(config, "type_vocab_size", 2) or 0)
        return self._layout

    def set_module(self, module: MRCSpanModule, tokenizer, vocab_file_contents, backbone_ref) -> None:
        device = get_torch_default_device()
        module.to(device)
        self._model = module
        self.tokenizer = tokenizer
        self.vocab_file_contents = vocab_file_contents
        self.backbone_ref = dict(backbone_ref)
        self._layout = None
        self._grad_scaler.to_(device)

    def finish_update(self, optimizer) -> None:
        """PyTorchShim.finish_update, with optimizer keys that tell the heads
        apart: prompt parameters keep their dotted name (``...prompt_encoder...``:
        ``prompt_learn_rate``), backbone parameters too (``learn_rate``), and the
        span heads -- small layers trained from scratch, like a thinc head -- are
        keyed without dots (``start_head/weight``), which PromptAdam treats as
        head parameters (``head_learn_rate``)."""
        for name, param in self._model.named_parameters():
            if param.grad is None:
                continue
            if not self._grad_scaler.found_inf:
                key = name if name.startswith("encoder.") else name.replace(".", "/")
                data, grad = optimizer(
                    (self.id, key), cast(FloatsXd, torch2xp(param.data)), cast(FloatsXd, torch2xp(param.grad))
                )
                param.data = xp2torch(data, requires_grad=True, device=param.device)
            param.grad.zero_()
        self._grad_scaler.update()

    def to_device(self, device_type: str, device_id: int):  # pragma: no cover - GPU only
        if self._model is not None:
            super().to_device(device_type, device_id)

    def to_bytes(self) -> bytes:
        msg: Dict[str, Any] = {
            "format": SERIALIZATION_FORMAT,
            "settings": self.settings,
            "head_config": self.head_config,
            "tokenizer_config": self.tokenizer_config,
            "transformer_config": self.transformer_config,
            "module": None,
        }
        module = self._model
        if module is not None:
            msg["module"], self.backbone_ref = encoder_to_msg(
                module.encoder,
                self.tokenizer,
                self.vocab_file_contents,
                self.backbone_ref,
                save_backbone=self.settings.get("save_backbone", True),
            )
            msg["module"]["heads"] = state_to_shards(module.head_state())
        return srsly.msgpack_dumps(msg)

    def from_bytes(self, bytes_data: bytes) -> "MRCShim":
        msg = srsly.msgpack_loads(bytes_data)
        if msg.get("format") != SERIALIZATION_FORMAT:
            raise ValueError(f"not an MRC span model (format {msg.get('format')!r}, expected {SERIALIZATION_FORMAT!r})")
        self.settings = dict(msg["settings"])
        self.head_config = dict(msg["head_config"])
        self.tokenizer_config = dict(msg.get("tokenizer_config") or {})
        self.transformer_config = dict(msg.get("transformer_config") or {})
        data = msg.get("module")
        if data is None:
            self._model = None
            return self
        encoder, tokenizer, vocab_contents, ref = encoder_from_msg(
            data, [self.load_name], self.transformer_config, get_torch_default_device()
        )
        module = MRCSpanModule(encoder, **self.head_config)
        missing, unexpected = module.load_state_dict(shards_to_state(data["heads"]), strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(f"MRC head weights do not fit: missing {missing}, unexpected {unexpected}")
        self.set_module(module, tokenizer, vocab_contents, ref)
        return self


# ---------------------------------------------------------------- model
def mrc_shim(model: Model) -> MRCShim:
    return model.shims[0]


def mrc_module(model: Model) -> Optional[MRCSpanModule]:
    return mrc_shim(model).module


def mrc_encoder(model: Model) -> Optional[PromptedEncoder]:
    module = mrc_module(model)
    return module.encoder if module is not None else None


def mrc_tokenizer(model: Model):
    return mrc_shim(model).tokenizer


def mrc_layout(model: Model) -> SpecialLayout:
    return mrc_shim(model).layout


def mrc_text_limit(model: Model) -> int:
    """Longest row (specials included) the encoder takes next to its prompt."""
    return text_limit(mrc_encoder(model), mrc_tokenizer(model))


def set_load_name(model: Model) -> None:
    """Remember the configured backbone name before ``from_bytes`` restores the
    saved attrs: a prompt-only save looks for its backbone there first."""
    mrc_shim(model).load_name = model.attrs.get("name")


def _to_torch(rows: MRCRows, device) -> Dict[str, torch.Tensor]:
    def t(array, dtype=torch.long):
        return torch.as_tensor(numpy.ascontiguousarray(array), dtype=dtype, device=device)

    return {
        "input_ids": t(rows.input_ids),
        "attention_mask": t(rows.attention_mask),
        "token_type_ids": t(rows.token_type_ids),
        "prompt_ids": t(rows.prompt_ids),
        "start_mask": t(rows.start_mask, torch.bool),
        "end_mask": t(rows.end_mask, torch.bool),
        "word_index": t(rows.word_index),
    }


def _kwargs(rows: MRCRows, device) -> Dict[str, Any]:
    options = {**DEFAULT_OPTIONS, **(getattr(rows, "options", None) or {})}
    kwargs: Dict[str, Any] = _to_torch(rows, device)
    kwargs.update(
        max_span_width=int(options["max_span_width"]),
        threshold=float(options["threshold"]),
        match_threshold=float(options["match_threshold"]),
        loss_weights=dict(options["loss_weights"]),
        max_match_candidates=options.get("max_match_candidates"),
    )
    return kwargs


def _check(shim: MRCShim) -> None:
    if shim.module is None:
        raise ValueError("the MRC model is not initialised (call nlp.initialize or load a trained pipeline)")


def forward(model: Model, rows: MRCRows, is_train: bool):
    """thinc forward: ``predict`` decodes spans; ``begin_update`` (rows with
    ``gold``) returns the losses and a backprop taking ``d_loss``."""
    shim = mrc_shim(model)
    _check(shim)
    kwargs = _kwargs(rows, shim.device)
    if not is_train:
        out = shim.predict(ArgsKwargs(args=(), kwargs=kwargs))
        result = {
            "spans": out["spans"].detach().cpu().numpy().astype("int64"),
            "probs": out["probs"].detach().float().cpu().numpy(),
        }
        return result, lambda d: rows
    kwargs["gold"] = torch.as_tensor(numpy.asarray(rows.gold, dtype="int64").reshape(-1, 3), device=shim.device)
    out, backprop_shim = shim.begin_update(ArgsKwargs(args=(), kwargs=kwargs))
    loss = out["loss"]
    result = {key: float(value.detach()) for key, value in out.items()}

    def backprop(d_loss: float = 1.0):
        if loss.requires_grad:
            grad = torch.full_like(loss, float(d_loss))
            backprop_shim(ArgsKwargs(args=([loss],), kwargs={"grad_tensors": [grad]}))
        return rows

    return result, backprop


def row_chunks(rows: MRCRows, max_rows: Optional[int]) -> List[numpy.ndarray]:
    """Row indices in chunks of at most ``max_rows`` (sorted by length, so each
    chunk pads little); one chunk with every row when ``max_rows`` is None."""
    if not max_rows or len(rows) <= int(max_rows):
        return [numpy.arange(len(rows))]
    order = numpy.argsort(rows.attention_mask.sum(1), kind="stable")
    return [order[k : k + int(max_rows)] for k in range(0, len(order), int(max_rows))]


def train_on_rows(model: Model, rows: MRCRows, max_rows: Optional[int] = None) -> Dict[str, float]:
    """Forward and backward over ``rows`` (with ``gold``) in chunks of at most
    ``max_rows`` rows, accumulating gradients (each chunk's loss weighted by its
    share of the rows; mixed-precision loss scaling applied per chunk and undone
    once), ready for ``model.finish_update``.  One chunk = one forward for the
    whole batch, exactly ``begin_update`` + ``backprop(1.0)``."""
    chunks = row_chunks(rows, max_rows)
    if len(chunks) == 1:
        out, backprop = model.begin_update(rows)
        backprop(1.0)
        return out
    shim = mrc_shim(model)
    _check(shim)
    module = shim.module
    module.train()
    total = float(len(rows))
    sums: Dict[str, float] = {}
    autocast = bool(shim._mixed_precision) and torch.cuda.is_available()
    for index in chunks:
        sub = rows.select(index)
        kwargs = _kwargs(sub, shim.device)
        kwargs["gold"] = torch.as_tensor(numpy.asarray(sub.gold, dtype="int64").reshape(-1, 3), device=shim.device)
        with torch.autocast(device_type="cuda", enabled=autocast):
            out = module(**kwargs)
        weight = len(index) / total
        loss = out["loss"] * weight
        if loss.requires_grad:
            scaled = shim._grad_scaler.scale([loss], inplace=False)[0] if shim._grad_scaler._enabled else loss
            scaled.backward()
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * (1.0 if key == "n_match" else weight)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if grads and shim._grad_scaler.unscale(grads):
        for grad in grads:
            grad.zero_()
    return sums


def init(model: Model, X=None, Y=None) -> None:
    shim = mrc_shim(model)
    if shim.module is not None:
        return
    from pathlib import Path

    from transformers import AutoTokenizer

    labels = list(model.attrs.get("labels") or [])
    if not labels:
        raise ValueError("the MRC model needs its labels (model.attrs['labels']) before initialize")
    settings_data = dict(shim.settings)
    settings_data["prompt_names"] = labels
    if settings_data.get("prompt_init") == "text" and not settings_data.get("prompt_init_text"):
        texts = dict(model.attrs.get("prompt_texts") or {})
        settings_data["prompt_init_text"] = {label: texts.get(label) or label.replace("_", " ") for label in labels}
    settings = EncoderSettings.from_dict(settings_data)
    name = str(model.attrs["name"])
    source, _ = resolve_backbone(name)
    tokenizer = AutoTokenizer.from_pretrained(source, **shim.tokenizer_config)
    vocab_file_contents = None
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if vocab_file and Path(str(vocab_file)).is_file():
        vocab_file_contents = Path(str(vocab_file)).read_bytes()
    backbone, ref = load_backbone(
        name, shim.transformer_config, share=settings.freeze_backbone, with_checksum=settings.freeze_backbone
    )
    with torch.random.fork_rng(devices=[]):
        if settings.init_seed is not None:
            torch.manual_seed(int(settings.init_seed))
        encoder = build_encoder(backbone, tokenizer, settings)
        module = MRCSpanModule(encoder, **shim.head_config)
    shim.settings = settings.to_dict()
    shim.set_module(module, tokenizer, vocab_file_contents, ref)
    model.attrs["has_module"] = True


@registry.architectures("spacy_softprompt.MRCSpanModel.v1")
def create_mrc_span_model_v1(
    name: str,
    tokenizer_config: dict = {"use_fast": True},
    transformer_config: dict = {},
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},
    prompt_length: int = 20,
    prompt_depth: str = "deep",
    prompt_init: str = "vocab",
    prompt_init_text: Union[str, Dict[str, str]] = "",
    reparameterize: bool = False,
    reparameterize_hidden_size: int = 512,
    freeze_backbone: bool = False,
    save_backbone: bool = True,
    gradient_checkpointing: bool = False,
    mixed_precision_dtype: str = "float16",
    init_seed: Optional[int] = None,
    hidden_width: int = 256,
    dropout: float = 0.1,
) -> Model[MRCRows, Dict[str, Any]]:
    """A prompted encoder with MRC span heads; one prompt per label of the
    owning component (``mrc_ner``: entity labels, ``mrc_relations``: relation
    labels).

    name, tokenizer_config, transformer_config, mixed_precision,
    grad_scaler_config, prompt_length, prompt_depth, prompt_init,
    reparameterize, reparameterize_hidden_size, freeze_backbone, save_backbone,
    gradient_checkpointing, mixed_precision_dtype, init_seed: as in
    ``spacy_softprompt.SoftPromptTransformerModel.v1``.
    prompt_init_text (str or dict label -> text): text for ``prompt_init =
        "text"``; empty = each label's question (or name), from the component.
    hidden_width (int): width of the span-match scorer's hidden layer.
    dropout (float): dropout on the encoder output and the match layer.
    """
    placeholder = prompt_init_text or ("label" if prompt_init == "text" else "")
    settings = EncoderSettings(
        prompt_length=prompt_length,
        prompt_depth=prompt_depth,
        prompt_init=prompt_init,
        prompt_init_text=placeholder,
        reparameterize=reparameterize,
        reparameterize_hidden_size=reparameterize_hidden_size,
        hard_prompt=None,
        freeze_backbone=freeze_backbone,
        save_backbone=save_backbone,
        gradient_checkpointing=gradient_checkpointing,
        mixed_precision_dtype=mixed_precision_dtype,
        init_seed=init_seed,
    ).to_dict()
    settings["prompt_init_text"] = copy.deepcopy(prompt_init_text)
    if hidden_width < 1:
        raise ValueError(f"hidden_width must be >= 1, got {hidden_width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    shim = MRCShim(
        settings,
        {"hidden_width": int(hidden_width), "dropout": float(dropout)},
        dict(tokenizer_config or {}),
        dict(transformer_config or {}),
        mixed_precision=mixed_precision,
        grad_scaler_config=dict(grad_scaler_config or {}),
    )
    return Model(
        "mrc_span",
        forward,
        init=init,
        shims=[shim],
        attrs={"name": name, "labels": [], "prompt_texts": {}, "has_module": False},
    )
