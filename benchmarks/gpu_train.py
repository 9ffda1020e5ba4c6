"""Training steps on one device: s/step, peak memory, the stage split of a step,
and what a frozen step must not pay for (backbone gradients, optimizer state)."""
import time
from typing import Any, Dict

import bench_common as bc
import gpu_setup
from gpu_stages import Stages


def split_step(nlp, egs, optimizer, stages: Stages) -> None:
    """One training step as ``nlp.update`` does it (every component's ``update``,
    then every ``finish_update``), with the stages timed."""
    import torch

    from spacy_softprompt.encoder.model import PromptedEncoder

    patches = [(PromptedEncoder, "forward", PromptedEncoder.forward), (torch.autograd, "backward", torch.autograd.backward)]
    PromptedEncoder.forward = stages.wrap("  backbone forward", PromptedEncoder.forward)
    torch.autograd.backward = stages.wrap("  backbone backward", torch.autograd.backward)
    try:
        losses: Dict[str, float] = {}
        for name, proc in nlp.pipeline:
            with stages.timing(f"{name} update"):
                proc.update(egs, drop=0.1, sgd=None, losses=losses)
        for name, proc in nlp.pipeline:
            with stages.timing(f"{name} optimizer step"):
                proc.finish_update(optimizer)
    finally:
        for obj, attr, old in patches:
            setattr(obj, attr, old)


def frozen_checks(nlp, optimizer) -> Dict[str, Any]:
    """What a step left behind on the backbone: gradients, optimizer state."""
    from spacy_softprompt.optimizers import is_head_key, is_prompt_key

    trf = nlp.get_pipe("transformer").model
    encoder, shim = trf.encoder, trf.shim
    backbone_params = list(encoder.backbone.parameters())
    keys = set()
    for table in (optimizer.mom1, optimizer.mom2, optimizer.averages or {}):
        keys.update(table)
    mine = [k for k in keys if isinstance(k, tuple) and k[0] == shim.id]
    return {
        "backbone_params": len(backbone_params),
        "backbone_requires_grad": sum(p.requires_grad for p in backbone_params),
        "backbone_grads": sum(p.grad is not None for p in backbone_params),
        "backbone_optimizer_entries": sum(not is_prompt_key(k) and not is_head_key(k) for k in mine),
        "prompt_optimizer_entries": sum(bool(is_prompt_key(k)) for k in mine),
        "backbone_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in backbone_params}),
        "trainable_share": encoder.num_trainable_parameters() / max(1, sum(p.numel() for p in encoder.parameters())),
    }


def optimizer_of(spec: Dict[str, Any], config: str):
    """The training optimizer of the shipped config (PromptAdam with its learning rates)."""
    from spacy.util import registry

    cfg = bc.pipeline_config(spec["backbone"], config=f"{config}_gpu.cfg")
    return registry.resolve({"o": cfg["training"]["optimizer"]})["o"]


def worker_train(spec: Dict[str, Any]) -> Dict[str, Any]:
    """s/step, peak memory and stage split of ``nlp.update`` for one config."""
    device = gpu_setup.setup(spec)
    overrides = {"gradient_checkpointing": True} if spec.get("checkpointing") else {}
    nlp = gpu_setup.build(spec, spec["config"], **overrides)
    optimizer = optimizer_of(spec, spec["config"])
    n_notes = max(1, spec["train_words"] // spec["words"])
    egs = bc.examples(nlp, bc.notes(n_notes, spec["words"], seed=7))

    def step():
        nlp.update(egs, sgd=optimizer, drop=0.1)
        bc.synchronize(device)

    with bc.peak_memory(device) as first:
        step()  # warm-up; optimizer state is created here
    times, cpu_times = [], []
    with bc.peak_memory(device) as mem:
        for _ in range(spec["train_steps"]):
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    stages = Stages(device, spec["clock"])
    split_step(nlp, egs, optimizer, stages)
    return {
        "config": spec["config"], "device": device, "step_words": sum(len(eg.reference) for eg in egs),
        "notes_per_step": n_notes, "s_per_step": sorted(times)[len(times) // 2], "cpu_s_per_step": sorted(cpu_times)[len(cpu_times) // 2],
        "runs_s": times, "peak_mb": max(first.get("peak_mb", 0.0), mem.get("peak_mb", 0.0)),
        "memory": {"first_step": first, "steps": mem}, "stages_s": stages.seconds,
        "checks": frozen_checks(nlp, optimizer), "gradient_checkpointing": bool(spec.get("checkpointing")),
    }
