"""Tensor (de)serialisation with safetensors (never pickle).

State dicts are split into shards of at most ``max_shard_bytes`` each, so a
multi-GB backbone never hits msgpack's 4 GiB limit for one binary value.
"""
from typing import Dict, List

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

MAX_SHARD_BYTES = 1 << 30


class CorruptModelError(ValueError):
    """Saved encoder data that cannot be read back (truncated or damaged file)."""


def _plain(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing storage (safetensors refuses that)."""
    seen = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset()) if tensor.numel() else None
        if ptr is not None and ptr in seen:
            tensor = tensor.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = tensor
    return out


def state_to_shards(state: Dict[str, torch.Tensor], max_shard_bytes: int = MAX_SHARD_BYTES) -> List[bytes]:
    shards: List[bytes] = []
    current: Dict[str, torch.Tensor] = {}
    size = 0
    for key, tensor in _plain(state).items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(st_save(current))
            current, size = {}, 0
        current[key] = tensor
        size += nbytes
    if current or not shards:
        shards.append(st_save(current))
    return shards


def shards_to_state(shards: List[bytes]) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(st_load(bytes(shard)))
    return state
