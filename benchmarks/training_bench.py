"""Training: seconds per step, peak memory and trainable share, frozen vs unfrozen.

Per backbone, each in its own process (so memory figures are clean), the
shipped single-pass pipeline (transformer + token_ner + relation_extractor) trained
with ``nlp.update`` on synthetic notes with entities and relations, PromptAdam
with the configs' learning rates, dropout 0.1:

* ``unfrozen P=20 deep``: configs/tok_soft_cpu.cfg (the "soft" strategy, the main job);
* ``frozen P=5 deep``: configs/tok_soft-frozen_cpu.cfg ("soft-frozen", as shipped);
* ``frozen P=20 deep``: soft-frozen with the main job's prompt length (the frozen table's
  ``soft-frozen-p20``);
* ``frozen P=20 deep + LoRA r8``: configs/tok_soft-lora_cpu.cfg ("soft-lora");
* ``frozen P=5 input``: soft-frozen with an input-layer prompt;
* ``finetune P=0``: configs/tok_finetune_cpu.cfg (reference).

Measured: mean time of the timed steps after one warm-up step (which allocates
the optimizer state), peak memory during training (process RSS sampled every
5 ms on CPU; ``torch.cuda.max_memory_allocated`` with ``--gpu-id``), both
absolute and above the memory after initialisation, and the share of
trainable parameters (encoder + ner + relation_extractor heads).
``benchmarks/encoder_bench.py`` measures the same for transformer + ner only.

Targets (GatorTron-base shape): frozen step time <= 0.75x unfrozen, frozen peak
memory <= 0.6x unfrozen, trainable share <= 3% when frozen.

Each worker leaves malloc as ``train`` does by default (glibc's own behaviour);
``--malloc retain`` keeps freed memory for reuse, as ``train --malloc retain`` does
(the side-by-side figure in docs/speed.md).

Run: ``python benchmarks/training_bench.py [--backbones minilm,gatortron-base-shaped]
[--layers 24] [--docs 8 --words 90] [--gt-docs 2 --gt-words 40] [--steps 5] [--malloc retain]``;
writes ``benchmarks/results/training.json``.
"""
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402
from spacy_softprompt.memory import MALLOC_ENV, memory_is_retained  # noqa: E402

RESULTS = bc.RESULTS_DIR / "training.json"
RUNS = {
    "unfrozen P=20 deep": ("tok_soft_cpu.cfg", {}),
    "frozen P=5 deep": ("tok_soft-frozen_cpu.cfg", {}),
    "frozen P=20 deep": ("tok_soft-frozen_cpu.cfg", {"prompt_length": 20}),
    "frozen P=20 deep + LoRA r8": ("tok_soft-lora_cpu.cfg", {}),
    "frozen P=5 input": ("tok_soft-frozen_cpu.cfg", {"prompt_depth": "input"}),
    "finetune P=0": ("tok_finetune_cpu.cfg", {}),
}
#: the shipped strategies the targets compare: the main job and soft-frozen as configured
UNFROZEN, FROZEN = "unfrozen P=20 deep", "frozen P=5 deep"
TARGET_TIME, TARGET_MEMORY, TARGET_SHARE = 0.75, 0.6, 0.03


def worker_train(spec):
    import torch

    from spacy_softprompt.optimizers import PromptAdam

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = bc.use_device(spec.get("gpu_id", -1))
    config, model = RUNS[spec["run"]]
    train_notes = bc.notes(spec["docs"], spec["words"], seed=7)
    nlp = bc.build_pipeline(spec["backbone"], config=config, init_notes=train_notes, **model)
    egs = bc.examples(nlp, train_notes)
    encoder = nlp.get_pipe("transformer").model.encoder
    heads = bc.head_parameters(nlp, ("token_ner", "relation_extractor"))
    total = sum(p.numel() for p in encoder.parameters()) + heads
    trainable = encoder.num_trainable_parameters() + heads
    # the shipped configs' optimizer (warmup schedule left out: constant rates)
    optimizer = PromptAdam(learn_rate=5e-5, prompt_learn_rate=1e-2, head_learn_rate=1e-3, L2=0.01,
                           L2_is_weight_decay=True, grad_clip=1.0, use_averages=False)
    times, losses = [], []
    with bc.peak_memory(device) as memory:
        for step in range(spec["steps"] + 1):
            start = time.perf_counter()
            step_losses = nlp.update(egs, sgd=optimizer, drop=0.1, losses={})
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if step:  # the first step allocates the optimizer state
                times.append(time.perf_counter() - start)
            losses.append({k: float(v) for k, v in step_losses.items()})
    return {
        "step_s": sum(times) / len(times),
        "steps_s": times,
        "peak_mb": memory["peak_mb"],
        "peak_above_init_mb": memory["above_start_mb"],
        "after_init_mb": memory["start_mb"],
        "memory_kind": memory["kind"],
        "max_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "head_params": int(heads),
        "trainable_share": trainable / total,
        "backbone_frozen": bool(encoder.backbone_frozen),
        "losses": losses,
        "words_per_step": sum(len(eg.predicted) for eg in egs),
        "device": device,
        "memory_retained": memory_is_retained(),  # set by bc.serve_worker from the parent's --malloc
    }


WORKERS = {"train": worker_train}


def main(argv=None) -> int:
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--backbones", default="minilm,gatortron-base-shaped")
    parser.add_argument("--layers", type=int, default=24, help="layers of the GatorTron-base-shaped model")
    parser.add_argument("--docs", type=int, default=8, help="MiniLM/tiny: notes per batch")
    parser.add_argument("--words", type=int, default=90, help="MiniLM/tiny: words per note")
    parser.add_argument("--gt-docs", type=int, default=2, help="GatorTron-shaped: notes per batch")
    parser.add_argument("--gt-words", type=int, default=40, help="GatorTron-shaped: words per note")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--runs", default=",".join(RUNS), help="which runs (comma-separated names)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--malloc", choices=("retain", "default"), default="default",
                        help="default: glibc's own, as `train` does; retain: keep freed memory (spacy_softprompt.memory)")
    parser.add_argument("--workdir", type=Path, default=bc.DEFAULT_WORKDIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if bc.serve_worker(args, WORKERS):
        return 0
    os.environ[MALLOC_ENV] = args.malloc  # read by each worker process (bc.serve_worker)

    runs = [r for r in RUNS if r in bc.csv(args.runs)]
    report = bc.new_report("training", args, backbones={})
    rows = []
    for label, source in bc.backbone_sources(bc.csv(args.backbones), args.workdir, args.layers).items():
        big = label.startswith("gatortron")
        entry = {"source": source, "docs": args.gt_docs if big else args.docs, "words_per_doc": args.gt_words if big else args.words, "runs": {}}
        for run in runs:
            spec = {"backbone": source, "run": run, "docs": entry["docs"], "words": entry["words_per_doc"],
                    "steps": args.steps, "threads": args.threads, "gpu_id": args.gpu_id}
            bc.log(f"{label}: training '{run}' ...")
            res = bc.run_worker(HERE / "training_bench.py", "train", spec)
            entry["runs"][run] = res
            bc.log(f"   {res['step_s']:.2f} s/step, peak {res['peak_mb']:.0f} MB (+{res['peak_above_init_mb']:.0f} MB)")
            rows.append((label, run, f"{res['step_s']:.2f}", f"{res['peak_mb']:.0f}", f"{res['peak_above_init_mb']:.0f}",
                         f"{100 * res['trainable_share']:.3f}% ({res['trainable_params']:,})"))
        r = entry["runs"]
        if UNFROZEN in r and FROZEN in r:
            un, fr = r[UNFROZEN], r[FROZEN]
            entry["ratios"] = {
                "time_frozen_over_unfrozen": fr["step_s"] / un["step_s"],
                "peak_memory_frozen_over_unfrozen": fr["peak_mb"] / un["peak_mb"],
                "training_memory_frozen_over_unfrozen": fr["peak_above_init_mb"] / max(un["peak_above_init_mb"], 1e-9),
            }
            note = "" if big else "target is set for the GatorTron-base shape; reported for reference"
            report["targets"][f"{label}: step time frozen / unfrozen ({FROZEN} / {UNFROZEN})"] = bc.target_entry(
                entry["ratios"]["time_frozen_over_unfrozen"], TARGET_TIME, False, note=note)
            report["targets"][f"{label}: peak memory frozen / unfrozen (absolute)"] = bc.target_entry(
                entry["ratios"]["peak_memory_frozen_over_unfrozen"], TARGET_MEMORY, False, note=note)
            report["targets"][f"{label}: training memory frozen / unfrozen (above init)"] = bc.target_entry(
                entry["ratios"]["training_memory_frozen_over_unfrozen"], TARGET_MEMORY, False, note=note)
        if UNFROZEN in r and "frozen P=20 deep + LoRA r8" in r:
            un, lora = r[UNFROZEN], r["frozen P=20 deep + LoRA r8"]
            entry.setdefault("ratios", {}).update({
                "time_lora_over_unfrozen": lora["step_s"] / un["step_s"],
                "peak_memory_lora_over_unfrozen": lora["peak_mb"] / un["peak_mb"],
            })
        for run in (FROZEN, "frozen P=20 deep", "frozen P=20 deep + LoRA r8", "frozen P=5 input"):
            if run in r:
                report["targets"][f"{label}: trainable share, {run}"] = bc.target_entry(
                    100 * r[run]["trainable_share"], 100 * TARGET_SHARE, False, unit="%")
        report["backbones"][label] = entry
    print()
    bc.print_table(("backbone", "run", "s/step", "peak MB", "peak above init MB", "trainable"), rows)
    return bc.finish(report, args.output)


if __name__ == "__main__":
    sys.exit(main())
