"""The thinc/spaCy side: ``SoftPromptTransformerModel`` and its shim.

``SoftPromptTransformerModel`` is a ``spacy_transformers`` ``TransformerModel``
whose torch module is a :class:`~.model.PromptedEncoder`.  Tokenisation,
alignment, windows, ``FullTransformerBatch`` and listeners stay
spacy-transformers'; what changes:

* each window row carries the prompt id of its Doc (``doc._.prompt``);
* windows are truncated to ``max_text_length`` (position budget minus prompt
  and hard prompt), and a strided span getter whose window cannot fit is a
  configuration error;
* the shim (:class:`SoftPromptShim`) saves safetensors, never pickle, and can
  save the prompt only (``save_backbone = false``), referring to the backbone
  by name/path and SHA-256.
"""
import contextlib
import copy
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy
import srsly
import torch
from spacy.tokens import Doc, Span
from spacy_transformers.align import get_alignment
from spacy_transformers.data_classes import FullTransformerBatch, HFObjects
from spacy_transformers.layers.hf_shim import HFShim
from spacy_transformers.layers.transformer_model import TransformerModel
from spacy_transformers.truncate import truncate_oversize_splits
from thinc.api import Model, get_torch_default_device, xp2torch
from thinc.layers.pytorchwrapper import forward as pytorch_forward
from thinc.shims.shim import Shim
from thinc.types import ArgsKwargs
from transformers.file_utils import ModelOutput

from .align import alignment_via_offset_mapping
from .batch import SoftPromptTransformerBatch
from .backbone import check_backbone_dtype, load_backbone
from .adapters import DEFAULT_ADAPTER_TARGETS
from .model import AUTOCAST_DTYPES, PROMPT_DEPTHS, PromptedEncoder
from .prompts import PROMPT_INITS, texts_per_prompt
from .storage import encoder_from_msg, encoder_to_msg, read_guarded
from .wordpieces import wordpiece_batch

#: ``doc._.prompt``: the name (or index) of the prompt a Doc is encoded with;
#: ``None`` selects the first of ``prompt_names``.
PROMPT_EXTENSION = "prompt"
SERIALIZATION_FORMAT = "spacy-softprompt/encoder/1"


def install_prompt_extension() -> None:
    if not Doc.has_extension(PROMPT_EXTENSION):
        Doc.set_extension(PROMPT_EXTENSION, default=None)


install_prompt_extension()


@dataclass
class EncoderSettings:
    """What the architecture adds to ``spacy-transformers.TransformerModel.v3``."""

    prompt_length: int = 20
    prompt_depth: str = "input"
    prompt_init: str = "vocab"
    prompt_init_text: Union[str, Dict[str, str]] = ""
    prompt_names: List[str] = field(default_factory=lambda: ["default"])
    reparameterize: bool = False
    reparameterize_hidden_size: int = 512
    hard_prompt: Optional[str] = None
    freeze_backbone: bool = False
    save_backbone: bool = True
    gradient_checkpointing: bool = False
    mixed_precision_dtype: str = "float16"
    init_seed: Optional[int] = None
    adapter_rank: int = 0
    adapter_alpha: float = 16.0
    adapter_targets: str = DEFAULT_ADAPTER_TARGETS
    backbone_dtype: str = "float32"

    def __post_init__(self):
        self.prompt_names = list(self.prompt_names)
        if self.prompt_length < 0:
            raise ValueError(f"prompt_length must be >= 0, got {self.prompt_length}")
        if self.prompt_depth not in PROMPT_DEPTHS:
            raise ValueError(f"prompt_depth must be one of {PROMPT_DEPTHS}, got {self.prompt_depth!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {PROMPT_INITS}, got {self.prompt_init!r}")
        if self.prompt_init == "text" and self.prompt_length and not self.prompt_init_text:
            raise ValueError("prompt_init = 'text' needs prompt_init_text")
        if not self.prompt_names or len(set(self.prompt_names)) != len(self.prompt_names):
            raise ValueError(f"prompt_names must be a non-empty list of unique names, got {self.prompt_names}")
        if self.mixed_precision_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"mixed_precision_dtype must be one of {sorted(AUTOCAST_DTYPES)}, got {self.mixed_precision_dtype!r}")
        if not self.save_backbone and not self.freeze_backbone:
            raise ValueError(
                "save_backbone = false (prompt-only pipelines) needs freeze_backbone = true: "
                "an unfrozen backbone changes during training and must be saved"
            )
        if self.adapter_rank < 0:
            raise ValueError(f"adapter_rank must be >= 0, got {self.adapter_rank}")
        if self.adapter_rank and not self.freeze_backbone:
            raise ValueError(
                "adapter_rank > 0 (LoRA adapters) needs freeze_backbone = true: adapters train a frozen "
                "backbone; an unfrozen one is trained in full"
            )
        check_backbone_dtype(self.backbone_dtype, self.adapter_rank)
        if self.backbone_dtype != "float32" and not self.freeze_backbone:
            raise ValueError(
                f"backbone_dtype = {self.backbone_dtype!r} needs freeze_backbone = true: half-precision weights "
                "are for a backbone that is not trained (its optimizer would update them in float32)"
            )
        if self.hard_prompt is not None and not str(self.hard_prompt).strip():
            self.hard_prompt = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "EncoderSettings":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ---------------------------------------------------------------- helpers
def hard_prompt_block(tokenizer, text: str) -> Tuple[List[int], int]:
    """Token ids to insert after a row's first token so that ``[CLS] text [SEP]``
    becomes ``[CLS] hard prompt [SEP] text [SEP]`` (the tokenizer's own pair
    format), and the token type id of the text segment."""
    hard = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not hard:
        return [], 1
    probe = [tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0]
    single = tokenizer.build_inputs_with_special_tokens(probe)
    pair = tokenizer.build_inputs_with_special_tokens(hard, probe)
    prefix = single.index(probe[0]) if probe[0] in single else -1
    if prefix != 1 or pair[:1] != single[:1]:
        raise ValueError(
            f"hard prompts need a tokenizer that starts every row with one special token; {type(tokenizer).__name__} does not"
        )
    suffix = len(single) - prefix - 1
    block = pair[1 : len(pair) - 1 - suffix]
    try:
        types = tokenizer.create_token_type_ids_from_sequences(hard, probe)
        text_type = int(types[-1])
    except Exception:  # noqa: BLE001 - tokenizers without token types
        text_type = 0
    return [int(i) for i in block], text_type


def build_encoder(backbone, tokenizer, settings: EncoderSettings) -> PromptedEncoder:
    """A freshly initialised :class:`PromptedEncoder` for ``settings``."""
    hard_ids, text_type = hard_prompt_block(tokenizer, settings.hard_prompt) if settings.hard_prompt else ([], 1)
    encoder = PromptedEncoder(
        backbone,
        prompt_length=settings.prompt_length,
        prompt_depth=settings.prompt_depth,
        prompt_names=settings.prompt_names,
        reparameterize=settings.reparameterize,
        reparameterize_hidden_size=settings.reparameterize_hidden_size,
        hard_prompt_ids=hard_ids,
        text_token_type_id=text_type,
        autocast_dtype=settings.mixed_precision_dtype,
        adapter_rank=settings.adapter_rank,
        adapter_alpha=settings.adapter_alpha,
        adapter_targets=settings.adapter_targets,
        backbone_dtype=settings.backbone_dtype,
    )
    token_ids = None
    if settings.prompt_init == "text" and settings.prompt_length:
        texts = texts_per_prompt(settings.prompt_init_text, settings.prompt_names)
        token_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    generator = None
    if settings.init_seed is not None:
        generator = torch.Generator().manual_seed(int(settings.init_seed))
    encoder.init_prompts(
        settings.prompt_init,
        token_ids=token_ids,
        num_real_tokens=min(len(tokenizer), backbone.get_input_embeddings().weight.shape[0]),
        exclude_ids=tokenizer.all_special_ids,
        generator=generator,
    )
    if settings.freeze_backbone:
        encoder.freeze_backbone()
    if settings.gradient_checkpointing:
        encoder.enable_gradient_checkpointing()
    return encoder


def window_texts(docs: List[Doc], nested_spans: List[List[Span]]) -> List[str]:
    """Each window's ``Span.text``, sliced from its doc's text (built once per doc)
    rather than joined token by token for every (overlapping) window."""
    texts: List[str] = []
    for doc, spans in zip(docs, nested_spans):
        if any(span.doc is not doc for span in spans):
            texts.extend(span.text for span in spans)
            continue
        text = doc.text
        texts.extend(text[span.start_char : span.end_char] for span in spans)
    return texts


def doc_prompt_index(doc: Doc, names: List[str]) -> int:
    value = getattr(doc._, PROMPT_EXTENSION) if Doc.has_extension(PROMPT_EXTENSION) else None
    if value is None:
        return 0
    if isinstance(value, (int, numpy.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(names):
            return int(value)
    elif value in names:
        return names.index(value)
    raise ValueError(f"doc._.{PROMPT_EXTENSION} = {value!r} is not one of this pipeline's prompt_names {names}")


def text_limit(encoder: PromptedEncoder, tokenizer) -> int:
    """Longest wordpiece row (specials included) a window may have."""
    limit = encoder.max_text_length
    tok_max = getattr(tokenizer, "model_max_length", None)
    if tok_max is not None and tok_max < 1_000_000:
        limit = min(limit, int(tok_max) - encoder.prompt_length - encoder.hard_prompt_length)
    return limit


def check_span_getter(get_spans: Callable, limit: int, n_specials: int) -> None:
    """Refuse a strided span getter whose window cannot fit the text budget."""
    window = None
    if isinstance(get_spans, functools.partial):
        window = get_spans.keywords.get("window")
    if window is not None and int(window) + n_specials > limit:
        raise ValueError(
            f"[components.transformer.model.get_spans] window = {window} spaCy tokens is too long: a window "
            f"becomes at least {int(window) + n_specials} wordpieces, but only {limit} fit next to the prompt "
            f"(max_position_embeddings minus prompt_length minus hard prompt). Use window <= {limit - n_specials}."
        )


# ------------------------------------------------------------------- shim
class SoftPromptShim(HFShim):
    """HFShim whose ``_model`` is a :class:`PromptedEncoder`; safetensors I/O."""

    def __init__(self, hf_model: HFObjects, settings: EncoderSettings, **kwargs):
        super().__init__(hf_model, **kwargs)
        self.settings = settings
        self.backbone_ref: Dict[str, Any] = {"name": None, "path": None, "sha256": None}
        self.load_name: Optional[str] = None  # configured name, tried first when loading a prompt-only save

    @property
    def encoder(self) -> Optional[PromptedEncoder]:
        return self._model if isinstance(self._model, PromptedEncoder) else None

    def predict(self, inputs: ArgsKwargs) -> Any:
        """PyTorchShim.predict without switching every module to eval mode and back
        on each batch (two walks over the backbone's module tree per call): the
        encoder goes to eval mode once and stays there until the next training
        step (``begin_update`` puts it back in train mode)."""
        if self._model.training:
            self._model.eval()
        precision = torch.autocast("cuda") if self._mixed_precision else contextlib.nullcontext()
        with torch.no_grad(), precision:
            return self._model(*inputs.args, **inputs.kwargs)

    def set_encoder(self, encoder: PromptedEncoder, tokenizer, vocab_file_contents, backbone_ref) -> None:
        device = get_torch_default_device()
        encoder.to(device)
        self._model = encoder
        self._hfmodel = HFObjects(
            tokenizer,
            encoder,
            vocab_file_contents,
            dict(self._hfmodel._init_tokenizer_config or {}),
            dict(self._hfmodel._init_transformer_config or {}),
        )
        self.backbone_ref = dict(backbone_ref)
        self._grad_scaler.to_(device)

    @contextlib.contextmanager
    def use_params(self, params):
        """Like PyTorchShim.use_params (string keys ``pytorch_{id}_{name}``), but
        loads partial state dicts (prompt only) and backs up only what it swaps."""
        key_prefix = f"pytorch_{self.id}_"
        state = {
            key[len(key_prefix) :]: xp2torch(value, device=self.device)
            for key, value in params.items()
            if isinstance(key, str) and key.startswith(key_prefix)
        }
        if not state or self._model is None:
            yield
            return
        current = self._model.state_dict()
        backup = {key: current[key].detach().clone() for key in state}
        self._model.load_state_dict(state, strict=False)
        try:
            yield
        finally:
            self._model.load_state_dict(backup, strict=False)

    def to_bytes(self) -> bytes:
        msg: Dict[str, Any] = {
            "format": SERIALIZATION_FORMAT,
            "settings": self.settings.to_dict(),
            "_init_tokenizer_config": dict(self._hfmodel._init_tokenizer_config or {}),
            "_init_transformer_config": dict(self._hfmodel._init_transformer_config or {}),
            "encoder": None,
        }
        encoder = self.encoder
        if encoder is not None:
            msg["encoder"], self.backbone_ref = encoder_to_msg(
                encoder,
                self._hfmodel.tokenizer,
                self._hfmodel.vocab_file_contents,
                self.backbone_ref,
                save_backbone=self.settings.save_backbone,
            )
        return srsly.msgpack_dumps(msg)

    def from_bytes(self, bytes_data: bytes) -> "SoftPromptShim":
        msg = srsly.msgpack_loads(bytes_data)
        if msg.get("format") != SERIALIZATION_FORMAT:
            raise ValueError(
                f"not a spacy-softprompt encoder (format {msg.get('format')!r}, expected {SERIALIZATION_FORMAT!r})"
            )
        self.settings = EncoderSettings.from_dict(msg["settings"])
        tok_cfg = msg.get("_init_tokenizer_config", {})
        trf_cfg = msg.get("_init_transformer_config", {})
        data = msg.get("encoder")
        if data is None:
            self._model = None
            self._hfmodel = HFObjects(None, None, None, tok_cfg, trf_cfg)
            return self
        encoder, tokenizer, vocab_contents, ref = encoder_from_msg(
            data, [self.load_name], trf_cfg, get_torch_default_device()
        )
        self._hfmodel = HFObjects(None, None, None, tok_cfg, trf_cfg)
        self.set_encoder(encoder, tokenizer, vocab_contents, ref)
        return self

    def to_disk(self, path: Union[str, Path]) -> None:
        Path(path).write_bytes(self.to_bytes())

    def from_disk(self, path: Union[str, Path]) -> "SoftPromptShim":
        return self.from_bytes(Path(path).read_bytes())


# ------------------------------------------------------------------ model
def _convert_inputs(model: Model, X, is_train: bool):
    wordpieces, prompt_ids = X
    device = model.shims[0].device
    kwargs = {
        "input_ids": xp2torch(wordpieces.input_ids, device=device),
        "attention_mask": xp2torch(wordpieces.attention_mask, device=device),
        "prompt_ids": torch.as_tensor(numpy.asarray(prompt_ids, dtype="int64"), device=device),
    }
    if wordpieces.token_type_ids is not None:
        kwargs["token_type_ids"] = xp2torch(wordpieces.token_type_ids, device=device)
    return ArgsKwargs(args=(), kwargs=kwargs), lambda dX: []


def _convert_outputs(model: Model, inputs_outputs, is_train: bool):
    _, model_output = inputs_outputs

    def backprop(d_model_output: ModelOutput) -> ArgsKwargs:
        grads = list(d_model_output.values())
        return ArgsKwargs(args=(model_output.last_hidden_state,), kwargs={"grad_tensors": grads[:1]})

    return model_output, backprop


def replace_listener(model: Model) -> Model:
    from spacy_transformers.layers.split_trf import split_trf_batch
    from thinc.api import chain

    return chain(model, split_trf_batch())


def replace_listener_cfg(tok2vec_model_cfg: Dict[str, Any], listener_model_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """When listeners are replaced by copies (``replace_listeners``), turn our
    architecture into its Tok2Vec form -- never spacy-transformers', which
    would not know our arguments."""
    result = tok2vec_model_cfg.copy()
    if "SoftPromptTransformerModel" in result.get("@architectures", "") and "TransformerListener" in listener_model_cfg.get(
        "@architectures", ""
    ):
        version = result["@architectures"].rsplit(".", 1)[-1]
        result["@architectures"] = f"spacy_softprompt.SoftPromptTok2VecTransformer.{version}"
        for key in ("pooling", "grad_factor"):
            if key in listener_model_cfg and key not in result:
                result[key] = listener_model_cfg[key]
    return result


class SoftPromptTransformerModel(TransformerModel):
    """``TransformerModel`` over a :class:`PromptedEncoder` (see module doc)."""

    def __init__(
        self,
        name: str,
        get_spans: Callable,
        tokenizer_config: Optional[dict] = None,
        transformer_config: Optional[dict] = None,
        mixed_precision: bool = False,
        grad_scaler_config: Optional[dict] = None,
        *,
        settings: Optional[EncoderSettings] = None,
    ):
        settings = settings or EncoderSettings()
        grad_scaler_config = dict(grad_scaler_config or {})
        if "enabled" not in grad_scaler_config:
            # bf16 has fp32's range: no loss scaling needed
            grad_scaler_config["enabled"] = bool(mixed_precision) and settings.mixed_precision_dtype == "float16"
        hf_model = HFObjects(None, None, None, dict(tokenizer_config or {}), dict(transformer_config or {}))
        shim = SoftPromptShim(
            hf_model, settings, mixed_precision=mixed_precision, grad_scaler_config=grad_scaler_config
        )
        wrapper = Model(
            "softprompt-hf-pytorch",
            pytorch_forward,
            attrs={"convert_inputs": _convert_inputs, "convert_outputs": _convert_outputs},
            shims=[shim],
            dims={"nI": None, "nO": None},
        )
        Model.__init__(
            self,
            "transformer",
            forward,
            init=init,
            layers=[wrapper],
            dims={"nO": None},
            attrs={
                "get_spans": get_spans,
                "name": name,
                "set_transformer": _set_transformer_unsupported,
                "has_transformer": False,
                "flush_cache_chance": 0.0,
                "replace_listener": replace_listener,
                "replace_listener_cfg": replace_listener_cfg,
            },
        )
        self._mixed_precision = bool(mixed_precision)
        self._grad_scaler_config = grad_scaler_config

    @property
    def shim(self) -> SoftPromptShim:
        return self.layers[0].shims[0]

    @property
    def encoder(self) -> Optional[PromptedEncoder]:
        """The :class:`PromptedEncoder` (``None`` before initialisation)."""
        return self.shim.encoder

    @property
    def settings(self) -> EncoderSettings:
        return self.shim.settings

    @property
    def max_text_length(self) -> int:
        return text_limit(self.encoder, self.tokenizer)

    def copy(self) -> "SoftPromptTransformerModel":
        copied = SoftPromptTransformerModel(
            self.attrs["name"],
            self.attrs["get_spans"],
            self._init_tokenizer_config,
            self._init_transformer_config,
            self._mixed_precision,
            self._grad_scaler_config,
            settings=copy.deepcopy(self.settings),
        )
        layer = copy.deepcopy(self.layers[0])
        with Shim.global_id_lock:  # a copy must not share optimizer state keys
            Shim.global_id += 1
            layer.shims[0].id = Shim.global_id
        copied.layers[0] = layer
        copied._layers = [layer]
        copied.attrs["has_transformer"] = self.attrs["has_transformer"]
        if self.has_dim("nO"):
            copied.set_dim("nO", self.get_dim("nO"))
        return copied

    def from_bytes(self, bytes_data: bytes) -> "SoftPromptTransformerModel":
        # The configured name (e.g. overridden in spacy.load(config=...)) is the
        # first place a prompt-only save looks for its backbone; thinc restores
        # the saved attrs (including the saved name) before the shim loads.
        self.shim.load_name = self.attrs.get("name")
        read_guarded(
            lambda: super(SoftPromptTransformerModel, self).from_bytes(bytes_data),
            "the transformer's saved model data",
            len(bytes_data),
        )
        encoder = self.encoder
        self.attrs["has_transformer"] = encoder is not None
        if encoder is not None:
            self.set_dim("nO", encoder.hidden_size, force=True)
            _check_windows(self)
        return self


def _set_transformer_unsupported(model, hf_model):
    raise ValueError("SoftPromptTransformerModel builds its own encoder; set_transformer is not supported")


def _check_windows(model: SoftPromptTransformerModel) -> None:
    tokenizer = model.tokenizer
    n_specials = tokenizer.num_special_tokens_to_add(pair=False) if hasattr(tokenizer, "num_special_tokens_to_add") else 2
    check_span_getter(model.attrs["get_spans"], model.max_text_length, n_specials)


def init(model: SoftPromptTransformerModel, X=None, Y=None) -> None:
    if model.attrs["has_transformer"]:
        return
    from transformers import AutoTokenizer

    from .backbone import resolve_backbone

    settings = model.settings
    name = model.attrs["name"]
    source, _ = resolve_backbone(str(name))
    tokenizer = AutoTokenizer.from_pretrained(source, **model._init_tokenizer_config)
    vocab_file_contents = None
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if vocab_file and Path(str(vocab_file)).is_file():
        vocab_file_contents = Path(str(vocab_file)).read_bytes()
    backbone, ref = load_backbone(
        str(name),
        model._init_transformer_config,
        share=settings.freeze_backbone and not settings.adapter_rank,  # adapters change the module
        with_checksum=settings.freeze_backbone,
        dtype=settings.backbone_dtype,
    )
    encoder = build_encoder(backbone, tokenizer, settings)
    model.shim.set_encoder(encoder, tokenizer, vocab_file_contents, ref)
    model.attrs["has_transformer"] = True
    model.set_dim("nO", encoder.hidden_size, force=True)
    _check_windows(model)


def forward(model: SoftPromptTransformerModel, docs: List[Doc], is_train: bool) -> Tuple[FullTransformerBatch, Callable]:
    tokenizer = model.tokenizer
    encoder = model.encoder
    wrapper = model.layers[0]
    nested_spans = model.attrs["get_spans"](docs)
    flat_spans = [span for doc_spans in nested_spans for span in doc_spans]
    names = encoder.prompt_names
    doc_prompts = [doc_prompt_index(doc, names) for doc in docs]  # per doc, not per window
    prompt_ids = numpy.repeat(numpy.asarray(doc_prompts, dtype="int64"), [len(s) for s in nested_spans])
    batch_encoding, wordpieces = wordpiece_batch(tokenizer, window_texts(docs, nested_spans))
    if "offset_mapping" in batch_encoding:
        align = alignment_via_offset_mapping(flat_spans, batch_encoding["offset_mapping"])
    else:
        align = get_alignment(flat_spans, wordpieces.strings, tokenizer.all_special_tokens)
    wordpieces, align = truncate_oversize_splits(wordpieces, align, model.max_text_length)
    model_output, backprop_wrapper = wrapper((wordpieces, prompt_ids), is_train)
    output = SoftPromptTransformerBatch(spans=nested_spans, wordpieces=wordpieces, model_output=model_output, align=align)

    def backprop(d_output: FullTransformerBatch) -> List[Doc]:
        backprop_wrapper(d_output.model_output)
        return docs

    return output, backprop
