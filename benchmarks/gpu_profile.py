"""Where the default pipeline's backbone time goes on a GPU: torch.profiler over the
transformer pipe and over the bare forward of the same windows.

``bench gpu`` gives the ratios; this says why they are what they are: the
shapes each backbone call gets (rows x width, grad mode, autocast dtype), the
kernels that take the device's time, the host-side operators, and the number of
kernel launches per call.  One config (default ``tok_soft``) on the generated
GatorTron-base-shaped backbone; weights random, only time matters.

    python benchmarks/gpu_profile.py [--config tok_soft] [--docs 64 --words 400] [--output gpu_profile.json]
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:
    sys.path.insert(1, str(HERE.parent))
import bench_common as bc  # noqa: E402
import gpu_backbones  # noqa: E402
import gpu_setup  # noqa: E402
from gpu_inference import _autocast, window_batches  # noqa: E402


def _table(prof, sort_by: str, rows: int) -> List[Dict[str, Any]]:
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, sort_by, 0), reverse=True)[:rows]
    return [{"name": e.key[:90], "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
             "self_device_ms": getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) / 1e3}
            for e in events]


def _launches(prof) -> int:
    return sum(e.count for e in prof.key_averages() if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))


def profile(run, device: str, rows: int = 25) -> Dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    start = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        run()
    wall = time.perf_counter() - start
    sort_device = "self_device_time_total" if hasattr(prof.key_averages()[0], "self_device_time_total") else "self_cuda_time_total"
    return {"wall_s": wall, "kernel_launches": _launches(prof),
            "by_device_time": _table(prof, sort_device, rows), "by_cpu_time": _table(prof, "self_cpu_time_total", rows)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tok_soft")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--words", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bare-rows", type=int, default=64)
    parser.add_argument("--window", type=int, default=192)
    parser.add_argument("--stride", type=int, default=160)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gpu_profile_models"))
    parser.add_argument("--output", type=Path, default=Path("gpu_profile.json"))
    args = parser.parse_args(argv)
    import torch

    args.workdir.mkdir(parents=True, exist_ok=True)
    backbone = gpu_backbones.synthetic_megatron(args.workdir, args.layers, args.hidden)
    spec = {"device": args.device, "gpu_id": 0, "threads": 0, "backbone": backbone, "window": args.window,
            "stride": args.stride}
    device = gpu_setup.setup(spec)
    nlp = gpu_setup.build(spec, args.config)
    texts = [t for t, _, _ in bc.notes(args.docs, args.words, seed=0)]
    trf = nlp.get_pipe("transformer")
    encoder = trf.model.encoder
    docs = list(nlp.tokenizer.pipe(texts))
    batches, n_windows, n_pieces = window_batches(nlp, docs, args.bare_rows, device)
    mixed = bool(trf.model.shim._mixed_precision)
    from spacy_softprompt.encoder.model import AUTOCAST_DTYPES

    dtype = AUTOCAST_DTYPES[encoder.autocast_dtype] if (mixed and device.startswith("cuda")) else None

    calls: List[Dict[str, Any]] = []
    original = encoder._forward_rows

    def recorded(input_ids, *rest, **kwargs):
        calls.append({"rows": int(input_ids.shape[0]), "width": int(input_ids.shape[1]),
                      "grad": torch.is_grad_enabled(),
                      "autocast": str(torch.get_autocast_dtype("cuda")) if torch.is_autocast_enabled("cuda") else None})
        return original(input_ids, *rest, **kwargs)

    def pipe_trf():
        list(trf.pipe(docs, batch_size=args.batch_size))
        bc.synchronize(device)

    def bare():
        encoder.backbone.eval()
        with torch.no_grad(), _autocast(device, dtype):
            for inputs in batches:
                encoder.backbone(**inputs)
        bc.synchronize(device)

    def pipe_all():
        list(nlp.pipe(texts, batch_size=args.batch_size))
        bc.synchronize(device)

    for run in (pipe_all, pipe_trf, bare):  # warm-up
        run()
    encoder._forward_rows = recorded
    pipe_trf()
    encoder._forward_rows = original
    walls = {}
    for name, run in (("transformer pipe", pipe_trf), ("bare forward", bare), ("nlp.pipe", pipe_all)):
        best = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            best.append(time.perf_counter() - start)
        walls[name] = min(best)
    report = {
        "config": args.config, "device": device, "docs": args.docs, "words": sum(len(d) for d in docs),
        "windows": n_windows, "wordpieces": n_pieces, "bare_batches": [list(b["input_ids"].shape) for b in batches],
        "backbone_calls_in_transformer_pipe": calls, "best_wall_s": walls,
        "profiles": {"transformer pipe": profile(pipe_trf, device), "bare forward": profile(bare, device)},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps({k: report[k] for k in ("windows", "wordpieces", "bare_batches", "best_wall_s")}, default=str))
    print("backbone calls:", json.dumps(calls))
    for name, prof in report["profiles"].items():
        print(f"\n## {name}: wall {prof['wall_s']:.3f}s, kernel launches {prof['kernel_launches']}")
        for key in ("by_device_time", "by_cpu_time"):
            print(f"-- {key}")
            for row in prof[key][:18]:
                print(f"{row['self_device_ms']:9.2f} dev ms {row['self_cpu_ms']:9.2f} cpu ms {row['calls']:6d}  {row['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
