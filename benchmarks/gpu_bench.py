"""GPU path of the default pipeline (token_ner + relations), against a bare forward.

One command, on one device (``--device cuda`` or ``--device cpu``), writes
``benchmarks/results/gpu.json``.  Per config (``tok_soft`` unfrozen,
``tok_soft-frozen``; ``configs/<name>_gpu.cfg``) on a generated
GatorTron-base-shaped backbone (``gpu_backbones``):

* inference (``gpu_inference``): per-stage time per 10k words and the host
  work outside the forward (``gpu_stages``); ``nlp.pipe``, the transformer pipe
  alone and the bare forward (fp16/bf16 autocast like the pipeline) on the
  same windows, interleaved, best of ``--repeats``; ``--workers N`` spawned
  processes sharing the device (what ``annotate --n-process N --gpu-id 0``
  runs); ``nlp.pipe`` vs the overlapped pipe (``annotate --overlap``) on
  ``--overlap-docs`` notes; fp16/bf16 vs fp32 agreement (CUDA);
* training (``gpu_train``): s/step (median), peak memory, step split, and
  what a frozen step leaves on the backbone;
* ``--large`` (``gpu_large``): the GatorTron-large shape (56 x 3584) in bf16
  built on the device, frozen step with gradient checkpointing, pipe vs bare.

Weights are random and heads untrained: only speed and memory mean anything.
Needs no network and no packaged backbone.  ``--device cpu --layers 2 --hidden
128`` is a quick smoke run of the same code (tests/test_gpu_bench.py).
"""
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # the package from this checkout, installed or not
    sys.path.insert(1, str(HERE.parent))
import bench_common as bc  # noqa: E402
import gpu_backbones  # noqa: E402
from gpu_inference import worker_infer  # noqa: E402
from gpu_large import worker_large  # noqa: E402
from gpu_setup import DEFAULT_CONFIGS  # noqa: E402
from gpu_stages import STAGE_ORDER  # noqa: E402
from gpu_train import worker_train  # noqa: E402

RESULTS = bc.RESULTS_DIR / "gpu.json"
TARGETS = {
    "pipe_vs_bare": 0.3,
    "workers_vs_bare": 0.7,
    "frozen_step_vs_unfrozen": 0.7,
    "frozen_peak_vs_unfrozen": 0.5,
    "span_agreement": 0.99,
}
WORKERS = {"infer": worker_infer, "train": worker_train, "large": worker_large}


def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}g}"


def parse_args(argv=None):
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--gpu-id", type=int, default=0)
    parser.add_argument("--layers", type=int, default=24, help="depth of the GatorTron-base-shaped model")
    parser.add_argument("--hidden", type=int, default=1024, help="width (1024 = GatorTron-base; smaller for smoke runs)")
    parser.add_argument("--backbone", default=None,
                        help="use this backbone (folder or package: name, e.g. minilm) instead of the generated one")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="shipped GPU configs")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--words", type=int, default=400, help="words per note")
    parser.add_argument("--batch-size", type=int, default=32, help="nlp.pipe batch size")
    parser.add_argument("--bare-rows", type=int, default=64, help="rows per batch of the bare forward")
    parser.add_argument("--window", type=int, default=192)
    parser.add_argument("--stride", type=int, default=160)
    parser.add_argument("--workers", type=int, default=4, help="worker processes sharing the device (0/1: skip)")
    parser.add_argument("--agreement-train-steps", type=int, default=None,
                        help="train the pipeline this many steps, then measure fp16/bf16 agreement again "
                             "(default 60 on CUDA, 0 on CPU, where the agreement is not measured)")
    parser.add_argument("--overlap-docs", type=int, default=256,
                        help="notes (the --docs notes repeated) for nlp.pipe vs the overlapped pipe (annotate --overlap)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None, help="default: wall on CUDA, cpu on CPU")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--train-words", type=int, default=4000, help="words per training step")
    parser.add_argument("--train-steps", type=int, default=3, help="timed steps after a warm-up (median)")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--agreement-docs", type=int, default=16)
    parser.add_argument("--frozen-checkpointing", action="store_true",
                        help="also a training step of each frozen config with gradient checkpointing")
    parser.add_argument("--frozen-backbone-dtype", choices=("bfloat16", "float16"), default=None,
                        help="also a training step of each frozen config with its backbone weights in this dtype "
                             "(backbone_dtype), beside the shipped float32 one")
    parser.add_argument("--large", action="store_true", help="also the GatorTron-large shape (bf16, on the device)")
    parser.add_argument("--large-layers", type=int, default=gpu_backbones.LARGE_SHAPE["layers"])
    parser.add_argument("--large-hidden", type=int, default=gpu_backbones.LARGE_SHAPE["hidden"])
    parser.add_argument("--large-heads", type=int, default=gpu_backbones.LARGE_SHAPE["heads"])
    parser.add_argument("--malloc", choices=("retain", "default"), default="retain",
                        help="retain: every process keeps freed memory, as `annotate` does (spacy_softprompt.memory)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per worker process")
    parser.add_argument("--workdir", type=Path, default=bc.DEFAULT_WORKDIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if bc.serve_worker(args, WORKERS):
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --device cpu")
    from spacy_softprompt.memory import MALLOC_ENV

    os.environ[MALLOC_ENV] = args.malloc  # read by each worker process (bench_common.serve_worker, WorkerPool)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.backbone:
        backbone, label = (bc.MINILM if args.backbone == "minilm" else args.backbone), args.backbone
    else:
        backbone = gpu_backbones.synthetic_megatron(args.workdir, args.layers, args.hidden)
        label = f"MegatronBert {args.layers}x{args.hidden}" + (
            " (GatorTron-base shape)" if (args.layers, args.hidden) == (24, 1024) else "")
    bc.log(f"{label}: ready in {time.perf_counter() - start:.0f}s")
    base = {
        "device": args.device, "gpu_id": args.gpu_id, "backbone": backbone, "threads": args.threads,
        "docs": args.docs, "words": args.words, "batch_size": args.batch_size, "bare_rows": args.bare_rows,
        "window": args.window, "stride": args.stride, "workers": args.workers, "repeats": args.repeats,
        "overlap_docs": args.overlap_docs, "agreement_train_steps": (
            args.agreement_train_steps if args.agreement_train_steps is not None else (60 if args.device == "cuda" else 0)),
        "clock": args.clock or ("wall" if args.device == "cuda" else "cpu"), "train_words": args.train_words,
        "train_steps": args.train_steps, "agreement_docs": args.agreement_docs, "workdir": str(args.workdir),
    }
    report = bc.new_report("gpu", args, backbone={"label": label, "layers": args.layers, "hidden": args.hidden},
                           inference={}, train={}, large=None)
    script = Path(__file__).resolve()
    configs = bc.csv(args.configs)

    def part(kind: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        # one lease of a GPU is one try: a part that fails is recorded and the others still run;
        # the results file is rewritten after every part, so a timeout keeps what was measured
        try:
            return bc.run_worker(script, kind, spec, timeout=args.timeout)
        except Exception as err:  # noqa: BLE001 - recorded in the report, shown in the log
            bc.log(f"{kind} failed: {str(err)[-2000:]}")
            return {"error": f"{type(err).__name__}: {str(err)[-2000:]}"}

    for config in configs:
        bc.log(f"inference: {config}")
        report["inference"][config] = part("infer", dict(base, config=config))
        bc.write_report(report, args.output)
    if not args.no_train:
        for config in configs:
            bc.log(f"train: {config}")
            report["train"][config] = part("train", dict(base, config=config))
            bc.write_report(report, args.output)
        half_configs = [c for c in configs if "frozen" in c] if args.frozen_backbone_dtype else []
        for config in half_configs:
            bc.log(f"train: {config}, {args.frozen_backbone_dtype} backbone")
            spec = dict(base, config=config, frozen_backbone_dtype=args.frozen_backbone_dtype)
            report["train"][half_key(config, args.frozen_backbone_dtype)] = part("train", spec)
            bc.write_report(report, args.output)
        for config in [c for c in configs if "frozen" in c] if args.frozen_checkpointing else []:
            bc.log(f"train: {config}, gradient checkpointing")
            report["train"][f"{config} ({CHECKPOINTING})"] = part("train", dict(base, config=config, checkpointing=True))
            bc.write_report(report, args.output)
    if args.large:
        shape = {"layers": args.large_layers, "hidden": args.large_hidden, "heads": args.large_heads}
        bc.log(f"large: {shape}")
        report["large"] = part("large", dict(base, large_shape=shape))
        bc.write_report(report, args.output)
    report["failed_parts"] = failed_parts(report)
    measured = [c for c in configs if "error" not in report["inference"][c]]
    print_report(report, measured)
    add_targets(report, measured)
    return bc.finish(report, args.output)


#: results-key suffix of a frozen config's training step with gradient checkpointing
CHECKPOINTING = "gradient checkpointing"


def half_key(config: str, dtype: str) -> str:
    """The results key of a frozen config's training step with its backbone in ``dtype``."""
    return f"{config} ({dtype} backbone)"


def failed_parts(report: Dict[str, Any]) -> List[str]:
    """``kind:config`` of every part whose worker failed (its error is in the part's entry)."""
    failed = [f"inference:{c}" for c, r in report["inference"].items() if "error" in r]
    failed += [f"train:{c}" for c, r in report["train"].items() if "error" in r]
    if isinstance(report.get("large"), dict) and "error" in report["large"]:
        failed.append("large")
    return failed


def print_report(report: Dict[str, Any], configs: List[str]) -> None:
    inf = report["inference"]
    print(f"\n## Per-stage time per 10k words ({report['backbone']['label']}, {report['settings']['device']})\n")
    rows = []
    for stage in STAGE_ORDER:
        cells = [inf[c]["stages"]["per_10k_words_s"].get(stage) for c in configs]
        if any(v is not None for v in cells):
            rows.append([stage] + [_fmt(v) for v in cells])
    rows.append(["host (all but the backbone forward)"] + [_fmt(inf[c]["stages"]["host_s_per_10k_words"]) for c in configs])
    rows.append(["total"] + [_fmt(sum(inf[c]["stages"]["per_10k_words_s"].values())) for c in configs])
    bc.print_table(["stage (s / 10k words)"] + configs, rows)
    print("\n## Throughput (words/s, best of repeats, interleaved; workers: one timed pass)\n")
    rows = []
    for c in configs:
        t, w, r = inf[c]["throughput"], inf[c].get("workers"), inf[c]["ratios"]
        rows.append([c, _fmt(t["pipe"]["words_per_s"], 4), _fmt(t["transformer"]["words_per_s"], 4),
                     _fmt(t["bare forward"]["words_per_s"], 4), f"{r['pipe_vs_bare']:.2f}",
                     "n/a" if w is None else f"{w['words_per_s']:.4g} ({w['n_process']})",
                     _fmt(r.get("workers_vs_bare")), _fmt(t["pipe overlapped"]["words_per_s"], 4),
                     _fmt(r.get("overlapped_vs_bare")), _fmt(r.get("overlapped_vs_pipe")),
                     _fmt(t["pipe"].get("peak_gpu_mb"), 5)])
    bc.print_table(["config", "nlp.pipe", "transformer only", "bare forward", "pipe / bare", "N workers",
                    "workers / bare", "overlapped", "overlapped / bare", "overlapped / pipe", "peak GPU MB (pipe)"], rows)
    trained = {c: t for c, t in report["train"].items() if "error" not in t}
    if trained:
        print("\n## Training step (median)\n")
        rows = []
        for c, t in trained.items():
            ch = t["checks"]
            rows.append([c, f"{t['s_per_step']:.3f}", f"{t['peak_mb']:.0f}", t["step_words"], ch["backbone_grads"],
                         ch["backbone_optimizer_entries"], f"{100 * ch['trainable_share']:.2f}%"])
        bc.print_table(["config", "s/step", "peak MB", "words/step", "backbone grads", "backbone optimizer entries",
                        "trainable"], rows)
    for c in configs:
        for key in ("precision", "precision_trained"):
            prec = inf[c].get(key, {})
            if "skipped" in prec:
                print(f"\n{key} ({c}): skipped: {prec['skipped']}")
            elif prec:
                print(f"\n{key} ({c}): " + json.dumps(prec, default=str))
    if report.get("large"):
        print("\n## GatorTron-large shape\n" + json.dumps(report["large"], indent=1, default=str))


def add_targets(report: Dict[str, Any], configs: List[str]) -> None:
    targets = report["targets"]
    for c in configs:
        r = report["inference"][c]["ratios"]
        targets[f"{c}: nlp.pipe / bare forward"] = bc.target_entry(r["pipe_vs_bare"], TARGETS["pipe_vs_bare"], True)
        targets[f"{c}: N workers / bare forward"] = bc.target_entry(r.get("workers_vs_bare"), TARGETS["workers_vs_bare"], True)
        targets[f"{c}: overlapped pipe / bare forward"] = bc.target_entry(r.get("overlapped_vs_bare"), TARGETS["workers_vs_bare"], True)
        # the target is met or not on trained heads; untrained ones are reported beside them
        for key, label in (("precision_trained", "trained heads"), ("precision", "untrained heads")):
            prec = report["inference"][c].get(key, {})
            for dtype in ("float16", "bfloat16"):
                if isinstance(prec.get(dtype), dict) and "entity_agreement" in prec[dtype]:
                    targets[f"{c}: {dtype} vs fp32 entity agreement, {label}"] = bc.target_entry(
                        prec[dtype]["entity_agreement"], TARGETS["span_agreement"], True, unit="")
    train = report["train"]
    unfrozen, frozen = DEFAULT_CONFIGS
    if all(c in train and "error" not in train[c] for c in (unfrozen, frozen)):
        u, f = train[unfrozen], train[frozen]
        targets["train step frozen / unfrozen"] = bc.target_entry(
            f["s_per_step"] / u["s_per_step"], TARGETS["frozen_step_vs_unfrozen"], False)
        targets["peak memory frozen / unfrozen"] = bc.target_entry(
            f["peak_mb"] / u["peak_mb"], TARGETS["frozen_peak_vs_unfrozen"], False,
            note=u["memory"]["steps"].get("kind", ""))
        variants = [(f"{dtype} backbone", train.get(half_key(frozen, dtype))) for dtype in ("bfloat16", "float16")]
        variants.append((CHECKPOINTING, train.get(f"{frozen} ({CHECKPOINTING})")))
        for label, h in variants:
            if h and "error" not in h:
                targets[f"train step frozen ({label}) / unfrozen"] = bc.target_entry(
                    h["s_per_step"] / u["s_per_step"], TARGETS["frozen_step_vs_unfrozen"], False)
                targets[f"peak memory frozen ({label}) / unfrozen"] = bc.target_entry(
                    h["peak_mb"] / u["peak_mb"], TARGETS["frozen_peak_vs_unfrozen"], False,
                    note=u["memory"]["steps"].get("kind", ""))


if __name__ == "__main__":
    sys.exit(main())
