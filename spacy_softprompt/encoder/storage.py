"""What a saved prompted encoder holds, shared by the transformer and the MRC models.

An encoder is stored as plain data (msgpack-able): its settings, the backbone's
HF config, the tokenizer files, the prompt (safetensors, folded) and either the
backbone weights (safetensors shards) or, for prompt-only saves, a reference to
the backbone (name, path, SHA-256) that loading verifies, and the backbone's
low-rank adapters if it has any (safetensors, saved in both cases: they are
trained).  Nothing is pickled.
"""
import contextlib
import copy
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import srsly
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .backbone import (
    BackboneChecksumError,
    BackboneNotFoundError,
    backbone_checksum,
    check_backbone_dtype,
    load_verified_backbone,
)
from .model import PromptedEncoder
from .serialization import CorruptModelError, shards_to_state, state_to_shards

T = TypeVar("T")


def tokenizer_to_files(tokenizer, vocab_file_contents: Optional[bytes]) -> Dict[str, Any]:
    """The tokenizer's ``save_pretrained`` files as bytes (plus how to load them)."""
    files: Dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        old_vocab = getattr(tokenizer, "vocab_file", None)
        try:
            if old_vocab is not None and vocab_file_contents is not None and not Path(str(old_vocab)).is_file():
                name = tokenizer.vocab_files_names.get("vocab_file", "vocab.txt")
                (tmp_path / "_vocab").mkdir()
                (tmp_path / "_vocab" / name).write_bytes(vocab_file_contents)
                tokenizer.vocab_file = str(tmp_path / "_vocab" / name)
            out = tmp_path / "tok"
            tokenizer.save_pretrained(str(out))
        finally:
            if old_vocab is not None:
                tokenizer.vocab_file = old_vocab
        for path in out.iterdir():
            if path.is_file():
                files[path.name] = path.read_bytes()
    return {"kwargs": {"use_fast": bool(getattr(tokenizer, "is_fast", True))}, "files": files}


def tokenizer_from_files(data: Dict[str, Any]):
    """``(tokenizer, vocab file bytes or None)`` from :func:`tokenizer_to_files` data."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, content in data["files"].items():
            (Path(tmp) / name).write_bytes(content)
        tokenizer = AutoTokenizer.from_pretrained(tmp, **data.get("kwargs", {}))
        vocab_contents = None
        vocab_name = getattr(tokenizer, "vocab_files_names", {}).get("vocab_file")
        if vocab_name and (Path(tmp) / vocab_name).is_file():
            vocab_contents = (Path(tmp) / vocab_name).read_bytes()
    return tokenizer, vocab_contents


def backbone_from_state(hf_config: Dict[str, Any], shards: List[bytes], device, dtype: str = "float32") -> torch.nn.Module:
    """A backbone built from its HF config (weights in ``dtype``), loaded from safetensors shards."""
    from transformers import AutoConfig, AutoModel

    try:
        from transformers.modeling_utils import no_init_weights
    except ImportError:  # pragma: no cover
        no_init_weights = contextlib.nullcontext
    with tempfile.TemporaryDirectory() as tmp:
        srsly.write_json(Path(tmp) / "config.json", hf_config)
        config = AutoConfig.from_pretrained(tmp)
    with no_init_weights():
        model = AutoModel.from_config(config, torch_dtype=check_backbone_dtype(dtype))
    model.load_state_dict(shards_to_state(shards), strict=True)
    return model.to(device)


def encoder_to_msg(
    encoder: PromptedEncoder,
    tokenizer,
    vocab_file_contents: Optional[bytes],
    backbone_ref: Dict[str, Any],
    *,
    save_backbone: bool,
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(data, backbone_ref)``: the encoder as plain data, and the reference with
    the backbone's checksum filled in (computed once, for prompt-only saves)."""
    config = encoder.get_config()
    config["reparameterize"] = False  # the prompt is saved folded
    ref = dict(backbone_ref)
    if save_backbone:
        backbone_shards = state_to_shards(encoder.base_backbone_state())
    else:
        if not encoder.backbone_frozen:
            raise ValueError("save_backbone = false needs a frozen backbone")
        if not ref.get("sha256"):
            ref["sha256"] = backbone_checksum(encoder.backbone)
        backbone_shards = []
    data = {
        "config": config,
        "hf_config": encoder.backbone.config.to_dict(),
        "tokenizer": tokenizer_to_files(tokenizer, vocab_file_contents),
        "prompts": st_save(encoder.export_prompt_state()),
        "backbone": backbone_shards,
        "backbone_ref": ref,
    }
    adapters = encoder.export_adapter_state()
    if adapters:
        data["adapters"] = st_save(adapters)
    return data, dict(ref)


def encoder_from_msg(
    data: Dict[str, Any], first_candidates: Sequence[Optional[str]], transformer_config: Dict[str, Any], device
) -> Tuple[PromptedEncoder, Any, Optional[bytes], Dict[str, Any]]:
    """``(encoder, tokenizer, vocab file bytes, backbone_ref)`` from
    :func:`encoder_to_msg` data.  A prompt-only save looks for its backbone at
    ``first_candidates`` (the configured name), then the saved name and path."""
    tokenizer, vocab_contents = tokenizer_from_files(data["tokenizer"])
    ref = dict(data.get("backbone_ref") or {})
    config = data["config"] if "config" in data else data["encoder_config"]  # older MRC saves
    dtype = config.get("backbone_dtype", "float32")  # saves from before backbone_dtype: float32
    if data["backbone"]:
        backbone = backbone_from_state(data["hf_config"], data["backbone"], device, dtype)
    else:
        if not ref.get("sha256"):
            raise CorruptModelError("prompt-only model without a backbone checksum")
        candidates = [*first_candidates, ref.get("name"), ref.get("path")]
        backbone, found = load_verified_backbone(candidates, ref["sha256"], transformer_config, device=device, dtype=dtype)
        ref.update(found)
    if config.get("adapter_rank") and not data["backbone"]:
        backbone = copy.deepcopy(backbone)  # adapters go into the module: never into the shared one
    encoder = PromptedEncoder(backbone, **config)
    encoder.load_prompt_state(st_load(bytes(data["prompts"])))
    if data.get("adapters"):
        encoder.load_adapter_state(st_load(bytes(data["adapters"])))
    return encoder, tokenizer, vocab_contents, ref


#: what reading damaged bytes raises (msgpack, safetensors, missing or mistyped keys)
READ_ERRORS = (ValueError, KeyError, TypeError, IndexError, SafetensorError)


def read_guarded(read: Callable[[], T], what: str, n_bytes: int) -> T:
    """``read()``, with errors from damaged data turned into :class:`CorruptModelError`
    (our own backbone errors pass through)."""
    try:
        return read()
    except (BackboneChecksumError, BackboneNotFoundError, CorruptModelError):
        raise
    except READ_ERRORS as err:
        raise CorruptModelError(
            f"{what} ({n_bytes:,} bytes) is corrupt or truncated ({type(err).__name__}: {str(err)[:80]}); "
            "copy or reinstall the pipeline again"
        ) from None
