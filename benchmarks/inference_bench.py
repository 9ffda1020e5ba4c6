"""Inference: our single-pass pipeline vs plain spacy-transformers vs the bare forward pass.

Per backbone (MiniLM-L6 and a random GatorTron-base-shaped MegatronBert), in
one process and interleaved (A B C D, A B C D, ...; best of ``--repeats``), on
the same synthetic notes:

* ``softprompt P=20 input`` / ``softprompt P=20 deep``: ``nlp.pipe`` of the
  shipped single-pass pipeline (configs/soft-frozen_cpu.cfg: transformer with
  ``SoftPromptTransformerModel.v1`` + ``ner`` + ``relation_extractor``);
* ``softprompt P=0``: the same architecture without a prompt (our wrapper's cost);
* ``spacy-transformers``: the same config with ``TransformerModel.v3`` (same
  backbone, window 128 / stride 112, same heads);
* ``bare forward``: the backbone's own forward pass (``torch.no_grad``) over the
  wordpieces spacy-transformers makes of the same notes, batched as
  ``Transformer.pipe`` batches them; tokenisation excluded: the floor.

Speeds are spaCy tokens ("words") per second, wall-clock and per CPU-second
of the process.  By default torch runs one thread and the ratios use CPU time:
on a shared machine other people's jobs stretch wall time by +-10-40% between
runs, while the CPU time of a single-threaded process measures the work
(``--threads 0 --clock wall`` for the plain wall-clock comparison).  The order
of the variants rotates every round.  Heads are initialised on toy
notes, not trained; the number of entities they predict is reported because
the relation extractor's cost depends on it.  With ``--mrc`` (default on for
MiniLM) ``benchmarks/mrc_bench.py`` runs too and the cost of MRC per label is
reported (MRC time / single-pass time / number of labels; 1.0 = one full pass
per label); skipped when the MRC components are absent.

Run: ``python benchmarks/inference_bench.py [--backbones minilm,gatortron-base-shaped]
[--layers 24] [--docs 8 --words 150] [--gt-docs 2 --gt-words 60] [--repeats 8] [--threads 1 --clock cpu]``.
Prints a markdown table and writes ``benchmarks/results/inference.json``.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402

RESULTS = bc.RESULTS_DIR / "inference.json"
TARGET_VS_PLAIN = 0.85
TARGET_VS_FLOOR = 0.8
VARIANTS = ("softprompt P=20 input", "softprompt P=20 deep", "softprompt P=0", "spacy-transformers", "bare forward")


def _bare_forward_batches(nlp_plain, texts, batch_size):
    """Wordpiece batches exactly as the plain transformer pipe would build them."""
    import torch
    from spacy.util import minibatch
    from spacy_transformers.layers.transformer_model import huggingface_tokenize
    from spacy_transformers.util import batch_by_length

    trf = nlp_plain.get_pipe("transformer")
    model = trf.model
    tokenizer = model.tokenizer
    get_spans = model.attrs["get_spans"]
    docs = [nlp_plain.make_doc(t) for t in texts]
    batches = []
    for outer in minibatch(docs, batch_size):
        outer = list(outer)
        for indices in batch_by_length(outer, trf.cfg["max_batch_items"]):
            sub = [outer[i] for i in indices]
            spans = [span for doc_spans in get_spans(sub) for span in doc_spans]
            enc = huggingface_tokenize(tokenizer, [s.text for s in spans])
            inputs = {"input_ids": torch.as_tensor(enc["input_ids"]), "attention_mask": torch.as_tensor(enc["attention_mask"])}
            if "token_type_ids" in enc:
                inputs["token_type_ids"] = torch.as_tensor(enc["token_type_ids"])
            batches.append(inputs)
    return batches, sum(len(d) for d in docs)


def worker_inference(spec):
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = bc.use_device(spec.get("gpu_id", -1))
    backbone = spec["backbone"]
    texts = [text for text, _, _ in bc.notes(spec["docs"], spec["words"], seed=0)]
    init = bc.notes(4, 60, seed=100)
    start = time.perf_counter()
    pipes = {
        "softprompt P=20 input": bc.build_pipeline(backbone, init_notes=init, prompt_length=20, prompt_depth="input"),
        "softprompt P=20 deep": bc.build_pipeline(backbone, init_notes=init, prompt_length=20, prompt_depth="deep"),
        "softprompt P=0": bc.build_pipeline(backbone, init_notes=init, prompt_length=0, prompt_depth="input"),
        "spacy-transformers": bc.build_pipeline(backbone, init_notes=init, plain=True),
    }
    build_s = time.perf_counter() - start
    batch_size = pipes["spacy-transformers"].batch_size
    batches, n_words = _bare_forward_batches(pipes["spacy-transformers"], texts, batch_size)
    hf_model = pipes["softprompt P=20 deep"].get_pipe("transformer").model.encoder.backbone
    hf_model.eval()
    dev = next(hf_model.parameters()).device
    batches = [{k: v.to(dev) for k, v in b.items()} for b in batches]

    def bare():
        with torch.no_grad():
            for inputs in batches:
                hf_model(**inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def pipe(nlp):
        def run():
            docs = list(nlp.pipe(texts, batch_size=batch_size))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return docs

        return run

    runners = {name: pipe(nlp) for name, nlp in pipes.items()}
    runners["bare forward"] = bare
    counts = {}
    for name, run in runners.items():  # warm-up, and what the heads predict
        out = run()
        if out is not None:
            counts[name] = {
                "entities": sum(len(d.ents) for d in out),
                "relations": sum(len(d._.relations) for d in out),
                "words": sum(len(d) for d in out),
            }
    times = {name: [] for name in runners}
    cpu_times = {name: [] for name in runners}
    names = list(runners)
    for rep in range(spec["repeats"]):
        for name in names[rep % len(names):] + names[: rep % len(names)]:  # rotate the order each round
            c0, t0 = time.process_time(), time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
            cpu_times[name].append(time.process_time() - c0)
    result = {}
    for name, runs in times.items():
        best, best_cpu = min(runs), min(cpu_times[name])
        result[name] = {
            "words_per_s": n_words / best, "best_s": best, "median_s": sorted(runs)[len(runs) // 2], "runs_s": runs,
            "words_per_cpu_s": n_words / best_cpu, "best_cpu_s": best_cpu, "runs_cpu_s": cpu_times[name],
            **counts.get(name, {}),
        }
    return {
        "variants": result,
        "words": n_words,
        "docs": spec["docs"],
        "words_per_doc": spec["words"],
        "windows": sum(int(b["input_ids"].shape[0]) for b in batches),
        "wordpieces_padded": sum(int(b["input_ids"].numel()) for b in batches),
        "build_s": build_s,
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }


WORKERS = {"inference": worker_inference}


def _mrc(backbone, args):
    """benchmarks/mrc_bench.py on this backbone; cost per label from its figures."""
    try:
        import spacy_softprompt.mrc.ner  # noqa: F401
        import spacy_softprompt.mrc.relations  # noqa: F401
    except ImportError as err:
        return {"skipped": f"MRC components not available: {err}"}
    out = Path(tempfile.mkdtemp(prefix="mrc_bench_")) / "mrc.json"
    cmd = [sys.executable, str(HERE / "mrc_bench.py"), "--notes", str(args.mrc_notes), "--words", str(args.mrc_words),
           "--repeats", str(args.mrc_repeats), "--backbone", backbone, "--output", str(out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    import subprocess

    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"skipped": f"mrc_bench.py failed: {res.stderr[-1500:]}"}
    data = json.loads(out.read_text())["results"]
    entry = {"mrc_bench": data}
    for task, single, mrc in (("ner", "single_ner", "mrc_ner"), ("relations", "single_rel", "mrc_rel")):
        labels = data[mrc].get("labels") or 1
        slowdown = data[single]["tokens_per_s"] / data[mrc]["tokens_per_s"]
        entry[task] = {
            "labels": labels,
            "single_pass_words_per_s": data[single]["tokens_per_s"],
            "mrc_words_per_s": data[mrc]["tokens_per_s"],
            "mrc_slowdown": round(slowdown, 3),
            "cost_per_label_in_single_passes": round(slowdown / labels, 3),
        }
    return entry


def main(argv=None) -> int:
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--backbones", default="minilm,gatortron-base-shaped")
    parser.add_argument("--layers", type=int, default=24, help="layers of the GatorTron-base-shaped model (24 = the real shape)")
    parser.add_argument("--docs", type=int, default=8, help="MiniLM/tiny: notes per run")
    parser.add_argument("--words", type=int, default=150, help="MiniLM/tiny: words per note")
    parser.add_argument("--gt-docs", type=int, default=2, help="GatorTron-shaped: notes per run")
    parser.add_argument("--gt-words", type=int, default=60, help="GatorTron-shaped: words per note")
    parser.add_argument("--repeats", type=int, default=8, help="timed runs per variant (best is kept: many short runs find the undisturbed one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="what the ratios use: process CPU time (robust on a shared machine; needs --threads 1 to be exact) or wall time")
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--mrc", choices=["auto", "on", "off"], default="auto", help="auto: MRC on MiniLM only")
    parser.add_argument("--mrc-notes", type=int, default=4)
    parser.add_argument("--mrc-words", type=int, default=120)
    parser.add_argument("--mrc-repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=bc.DEFAULT_WORKDIR, help="where generated models are kept")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if bc.serve_worker(args, WORKERS):
        return 0

    report = bc.new_report("inference", args, backbones={})
    rows = []
    for label, source in bc.backbone_sources(bc.csv(args.backbones), args.workdir, args.layers).items():
        big = label.startswith("gatortron")
        spec = {"backbone": source, "docs": args.gt_docs if big else args.docs, "words": args.gt_words if big else args.words,
                "repeats": args.repeats, "threads": args.threads, "gpu_id": args.gpu_id}
        bc.log(f"{label}: timing {len(VARIANTS)} variants on {spec['docs']} notes x {spec['words']} words ...")
        res = bc.run_worker(HERE / "inference_bench.py", "inference", spec)
        v = res["variants"]
        key = "words_per_cpu_s" if args.clock == "cpu" else "words_per_s"
        plain, floor = v["spacy-transformers"][key], v["bare forward"][key]
        res["clock"] = args.clock
        res["ratios"] = {
            name: {"vs_spacy_transformers": v[name][key] / plain, "vs_bare_forward": v[name][key] / floor}
            for name in v
        }
        if args.mrc == "on" or (args.mrc == "auto" and label == "minilm"):
            bc.log(f"{label}: MRC (benchmarks/mrc_bench.py) ...")
            res["mrc"] = _mrc(source, args)
        report["backbones"][label] = res
        for name in VARIANTS:
            r = v[name]
            ratio = res["ratios"][name]
            rows.append((label, name, f"{r['words_per_s']:.1f}", f"{r['words_per_cpu_s']:.1f}", f"{ratio['vs_spacy_transformers']:.2f}",
                         f"{ratio['vs_bare_forward']:.2f}", r.get("entities", ""), r.get("relations", "")))
        for depth in ("input", "deep"):
            name = f"softprompt P=20 {depth}"
            report["targets"][f"{label}: {name} / spacy-transformers"] = bc.target_entry(
                res["ratios"][name]["vs_spacy_transformers"], TARGET_VS_PLAIN, True)
            report["targets"][f"{label}: {name} / bare forward"] = bc.target_entry(
                res["ratios"][name]["vs_bare_forward"], TARGET_VS_FLOOR, True)
        if "mrc" in res and "ner" in res["mrc"]:
            for task in ("ner", "relations"):
                m = res["mrc"][task]
                report["targets"][f"{label}: MRC {task} cost per label (single passes)"] = {
                    "value": m["cost_per_label_in_single_passes"], "target": "report only", "met": None,
                    "note": f"{m['labels']} labels: MRC is {m['mrc_slowdown']}x slower than single pass",
                }
    print()
    ratio_of = "CPU-time" if args.clock == "cpu" else "wall-clock"
    bc.print_table(("backbone", "pipeline", "words/s", "words/CPU-s", f"/ spacy-transformers ({ratio_of})",
                    f"/ bare forward ({ratio_of})", "entities", "relations"), rows)
    return bc.finish(report, args.output)


if __name__ == "__main__":
    sys.exit(main())
