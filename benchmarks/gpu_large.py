"""The GatorTron-large shape (56 x 3584, 8.9B parameters) in bf16, built on the
device: a frozen deep-prompt training step with gradient checkpointing (time,
peak memory, nothing left on the backbone), then ``nlp.pipe`` vs the bare forward."""
import time
from pathlib import Path
from typing import Any, Dict

import bench_common as bc
import gpu_backbones
import gpu_setup
from gpu_inference import window_batches
from gpu_train import frozen_checks, optimizer_of

#: the default pipeline with a frozen backbone
LARGE_CONFIG = "tok_soft-frozen"


def worker_large(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    device = gpu_setup.setup(spec)
    folder = gpu_backbones.large_config_folder(Path(spec["workdir"]), spec["large_shape"])
    spec = dict(spec, backbone=str(folder))
    start = time.perf_counter()
    with gpu_backbones.built_on_device(device):
        nlp = gpu_setup.build(spec, LARGE_CONFIG, gradient_checkpointing=True, mixed_precision_dtype="bfloat16",
                              **gpu_setup.half_backbone("bfloat16"))
    build_s = time.perf_counter() - start
    encoder = nlp.get_pipe("transformer").model.encoder
    optimizer = optimizer_of(spec, LARGE_CONFIG)
    egs = bc.examples(nlp, bc.notes(max(1, spec["train_words"] // spec["words"]), spec["words"], seed=7))
    with bc.peak_memory(device) as first:
        nlp.update(egs, sgd=optimizer, drop=0.1)
        bc.synchronize(device)
    with bc.peak_memory(device) as mem:
        start = time.perf_counter()
        nlp.update(egs, sgd=optimizer, drop=0.1)
        bc.synchronize(device)
        step_s = time.perf_counter() - start
    texts = [t for t, _, _ in bc.notes(spec["docs"], spec["words"], seed=0)]
    docs = list(nlp.tokenizer.pipe(texts))
    n_words = sum(len(d) for d in docs)
    batches, n_windows, _ = window_batches(nlp, docs, spec["bare_rows"], device)
    list(nlp.pipe(texts[:2]))
    with bc.peak_memory(device) as pipe_mem:
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=spec["batch_size"]))
        bc.synchronize(device)
        pipe_s = time.perf_counter() - start
    with bc.peak_memory(device) as bare_mem:
        start = time.perf_counter()
        cast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.no_grad()
        with torch.no_grad(), cast:
            for inputs in batches:
                encoder.backbone(**inputs)
        bc.synchronize(device)
        bare_s = time.perf_counter() - start
    return {
        "config": LARGE_CONFIG, "shape": spec["large_shape"],
        "parameters": sum(p.numel() for p in encoder.backbone.parameters()),
        "dtype": str(next(encoder.backbone.parameters()).dtype), "device": device, "build_s": build_s,
        "train_step_s": step_s, "train_words": sum(len(e.reference) for e in egs),
        "train_peak_mb": max(first.get("peak_mb", 0), mem.get("peak_mb", 0)), "checks": frozen_checks(nlp, optimizer),
        "pipe_words_per_s": n_words / pipe_s, "bare_words_per_s": n_words / bare_s, "pipe_vs_bare": bare_s / pipe_s,
        "pipe_peak_mb": pipe_mem.get("peak_mb"), "bare_peak_mb": bare_mem.get("peak_mb"), "words": n_words,
        "windows": n_windows,
    }
