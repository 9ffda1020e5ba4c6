"""Low-rank adapters (LoRA) inside a frozen backbone, through Hugging Face PEFT.

A frozen backbone with trained prompts reads a task through extra keys and
values only; LoRA adds a trained low-rank update ``B·A`` (rank ``r``, scaled by
``alpha / r``) to the projections themselves while the pretrained weights stay
frozen and shared.  PEFT's :func:`peft.inject_adapter_in_model` replaces the
target ``nn.Linear`` modules in place (``query`` becomes a LoRA layer holding
``base_layer``, ``lora_A``, ``lora_B``), so the backbone keeps its type and the
prompted forward is unchanged.

The pretrained weights are still addressed by their plain names through
:func:`base_state_dict` (for saving, checksums and prompt-only wheels); the
adapters are saved apart (:func:`adapter_state_dict`), a few hundred kB.
PEFT is an optional dependency: ``pip install spacy-softprompt[peft]``.
"""
from typing import Dict

import torch
from torch import nn

#: PEFT's marker in the parameter names of adapter weights (``lora_A``, ``lora_B``).
ADAPTER_MARKER = "lora_"
#: Every attention and feed-forward projection of the encoder layers of a
#: BERT-family backbone (BERT, MegatronBert/GatorTron, RoBERTa); not the pooler.
DEFAULT_ADAPTER_TARGETS = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
_BASE_SEGMENT = ".base_layer."


def is_adapter_name(name: str) -> bool:
    """True for the parameter / state names of adapter weights."""
    return any(part.startswith(ADAPTER_MARKER) for part in name.split("."))


def add_lora(backbone: nn.Module, *, rank: int, alpha: float, targets: str = DEFAULT_ADAPTER_TARGETS) -> nn.Module:
    """Inject LoRA layers of ``rank`` into ``backbone`` in place (B starts at zero,
    so the output is unchanged until training); returns ``backbone``."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "adapter_rank > 0 needs Hugging Face PEFT: pip install 'spacy-softprompt[peft]'"
        ) from err
    if rank <= 0:
        raise ValueError(f"adapter rank must be > 0, got {rank}")
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, target_modules=targets, bias="none")
    inject_adapter_in_model(config, backbone)
    if not any(is_adapter_name(name) for name, _ in backbone.named_parameters()):
        raise ValueError(f"adapter targets {targets!r} match no module of {type(backbone).__name__}")
    return backbone


def base_state_dict(backbone: nn.Module) -> Dict[str, torch.Tensor]:
    """The backbone's state under its plain names, adapters left out (what
    ``AutoModel.from_config(...).load_state_dict`` expects)."""
    state = {}
    for key, value in backbone.state_dict().items():
        if is_adapter_name(key):
            continue
        state[key.replace(_BASE_SEGMENT, ".")] = value
    return state


def adapter_state_dict(backbone: nn.Module) -> Dict[str, torch.Tensor]:
    """The adapter weights only, on CPU, under the backbone's own names."""
    return {key: value.detach().cpu().contiguous() for key, value in backbone.state_dict().items() if is_adapter_name(key)}


def load_adapter_state(backbone: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load :func:`adapter_state_dict` output; every adapter weight must be given."""
    own = {key for key in backbone.state_dict() if is_adapter_name(key)}
    given = set(state)
    if own != given:
        missing, unexpected = sorted(own - given)[:3], sorted(given - own)[:3]
        raise ValueError(f"saved adapters do not fit this backbone (missing {missing}, unexpected {unexpected})")
    backbone.load_state_dict(state, strict=False)
