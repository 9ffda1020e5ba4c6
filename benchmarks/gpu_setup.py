"""What every GPU benchmark worker does first: register the package's components,
pick the device, and build the default pipeline from a shipped GPU config.

The default pipeline is the one the main job trains: ``tok_soft`` (deep soft
prompts P=20, unfrozen) and ``tok_soft-frozen`` (frozen backbone), each with
``token_ner`` + ``relation_extractor`` (``configs/tok_*_gpu.cfg``).
"""
from typing import Any, Dict

import bench_common as bc

#: shipped GPU configs measured by default (``configs/<name>_gpu.cfg``)
DEFAULT_CONFIGS = ("tok_soft", "tok_soft-frozen")


def register() -> None:
    """Register what the configs name without relying on installed entry points
    (a source checkout copied to a GPU machine need not be pip-installed)."""
    import spacy_softprompt.architectures  # noqa: F401
    import spacy_softprompt.data.tokenizer  # noqa: F401
    import spacy_softprompt.heads.relation_extractor  # noqa: F401
    import spacy_softprompt.heads.token_ner  # noqa: F401
    import spacy_softprompt.optimizers  # noqa: F401
    import spacy_softprompt.scoring  # noqa: F401


def setup(spec: Dict[str, Any]) -> str:
    """Threads, allocator and device for a worker; returns ``"cuda:N"`` or ``"cpu"``."""
    import torch

    register()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["device"] == "cuda":
        from thinc.api import set_gpu_allocator

        set_gpu_allocator("pytorch")
    return bc.use_device(spec["gpu_id"] if spec["device"] == "cuda" else -1)


#: the architecture version that has ``backbone_dtype``
ARCHITECTURE_V2 = "spacy_softprompt.SoftPromptTransformerModel.v2"


def half_backbone(dtype: str) -> Dict[str, Any]:
    """Model overrides that keep a frozen backbone's weights in ``dtype``."""
    return {"@architectures": ARCHITECTURE_V2, "backbone_dtype": dtype}


def build(spec: Dict[str, Any], config: str, **model: Any):
    """The shipped GPU config ``config`` on ``spec["backbone"]``, heads initialised
    on synthetic notes; mixed precision off on CPU (autocast is CUDA-only in thinc's shim);
    ``spec["frozen_backbone_dtype"]``: a frozen config's backbone weights in that dtype."""
    overrides = dict(model)
    if spec.get("frozen_backbone_dtype") and "frozen" in config and "backbone_dtype" not in overrides:
        overrides.update(half_backbone(spec["frozen_backbone_dtype"]))
    if spec["device"] != "cuda":
        overrides["mixed_precision"] = False
    return bc.build_pipeline(spec["backbone"], config=f"{config}_gpu.cfg", window=spec["window"],
                             stride=spec["stride"], init_notes=bc.notes(4, 60, seed=100), **overrides)
