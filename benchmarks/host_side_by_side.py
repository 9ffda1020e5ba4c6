"""Host work per word of this checkout against an earlier revision, side by side.

Host work is what ``bench speed`` calls it: CPU seconds per 10k words outside the
backbone's forward (spaCy tokenizer, transformer stage without the forward, both
heads), one core, stage by stage over the maccrobat2020 dev notes with the
wordpiece cache emptied first (``pipeline_timing.stage_seconds``).  Absolute
figures move from one measurement day to the next on a shared machine; this
script gives the *ratio* of two code versions measured in one run:

* ``--before REV`` is checked out into a temporary git worktree;
* the two versions run alternately (before, after, before, after, ...), each in
  its own process with its code first on ``sys.path`` (the benchmark helpers of
  this checkout measure both), ``--repeats`` stage passes per pipeline;
* the pipelines: the default config with calibrated untrained heads (as ``bench
  speed``) and, with ``--model``, a trained pipeline;
* each process also hashes its predictions (entities and relations of every
  note): a speed change that alters an output is reported as such.

``--malloc`` compares this checkout with itself instead: "before" with glibc's
own malloc behaviour, "after" keeping freed memory as ``annotate`` does
(:mod:`spacy_softprompt.memory`). In ``--before`` mode both sides run with
glibc's default.

Run: ``python -m spacy_softprompt bench host-side-by-side --before 7c1b14e
[--model training/windows/default-seed3/model-best] [--rounds 2] [--repeats 3]``
(or ``--malloc`` instead of ``--before REV``);
writes ``benchmarks/results/host_side_by_side.json``.  Pause other work on the
machine first.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "host_side_by_side.json"


def measure(label: str, model: Optional[str], repeats: int, threads: int, malloc: str = "default") -> Dict[str, Any]:
    """Host work of the code this process imports (child side)."""
    sys.path.insert(0, str(HERE))
    if malloc != "default":
        from spacy_softprompt.memory import apply_malloc_setting

        apply_malloc_setting(malloc)
    import resource

    import numpy
    import torch

    torch.set_num_threads(threads)
    import pipeline_timing as pt
    import spacy_softprompt
    from spacy_softprompt.annotations import get_relations

    out: Dict[str, Any] = {"label": label, "code": str(Path(spacy_softprompt.__file__).resolve().parent), "malloc": malloc}
    kinds = [("calibrated", None)] + ([("trained", model)] if model else [])
    for kind, path in kinds:
        nlp, gold = pt.default_pipeline(model=Path(path) if path else None)
        if path is None:
            pt.calibrate_entity_rate(nlp, gold)
        texts = [doc.text for doc in gold]
        docs = list(nlp.pipe(texts))
        predictions = [
            [[e.start, e.end, e.label_] for e in doc.ents] + [sorted(map(str, rel.items())) for rel in get_relations(doc)]
            for doc in docs
        ]
        pt.stage_seconds(nlp, texts)  # warm-up: one-time costs
        runs = []
        for _ in range(repeats):
            seconds, words = pt.stage_seconds(nlp, texts)
            runs.append({name: value / words * 1e4 for name, value in seconds.items()})
        host = [sum(v for k, v in run.items() if k == "tokenizer" or k in nlp.pipe_names) for run in runs]
        out[kind] = {
            "host_cpu_s_per_10k_words": float(numpy.median(host)),
            "host_runs": host,
            "stages_cpu_s_per_10k_words": {k: float(numpy.median([run[k] for run in runs])) for k in runs[0]},
            "predictions_sha256": hashlib.sha256(json.dumps(predictions).encode()).hexdigest(),
            "entities": sum(len(doc.ents) for doc in docs),
            "relations": sum(len(get_relations(doc)) for doc in docs),
        }
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(code: Path, label: str, args: argparse.Namespace, output: Path, malloc: str = "default") -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS=str(args.threads))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", label, "--output", str(output),
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--child-malloc", malloc]
    if args.model:
        command += ["--model", str(Path(args.model).resolve())]
    subprocess.run(command, check=True, env=env, cwd=str(REPO))
    return json.loads(output.read_text(encoding="utf8"))


def summarise(rounds: List[Dict[str, Dict[str, Any]]], kinds: List[str]) -> Dict[str, Any]:
    import numpy

    summary: Dict[str, Any] = {}
    for kind in kinds:
        before = [r["before"][kind]["host_cpu_s_per_10k_words"] for r in rounds]
        after = [r["after"][kind]["host_cpu_s_per_10k_words"] for r in rounds]
        summary[kind] = {
            "before": before,
            "after": after,
            "after_over_before_per_round": [a / b for a, b in zip(after, before)],
            "after_over_before_median": float(numpy.median([a / b for a, b in zip(after, before)])),
            "same_predictions": all(
                r["before"][kind]["predictions_sha256"] == r["after"][kind]["predictions_sha256"] for r in rounds
            ),
            "stages_before": {k: float(numpy.median([r["before"][kind]["stages_cpu_s_per_10k_words"][k] for r in rounds]))
                              for k in rounds[0]["before"][kind]["stages_cpu_s_per_10k_words"]},
            "stages_after": {k: float(numpy.median([r["after"][kind]["stages_cpu_s_per_10k_words"][k] for r in rounds]))
                             for k in rounds[0]["after"][kind]["stages_cpu_s_per_10k_words"]},
        }
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="git revision to compare this checkout with")
    parser.add_argument("--malloc", action="store_true",
                        help="instead of --before: this checkout with glibc's malloc (before) vs keeping freed memory (after)")
    parser.add_argument("--model", help="a trained pipeline folder (measured beside the calibrated one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-malloc", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = measure(args.child, args.model, args.repeats, args.threads, args.child_malloc)
        Path(args.output).write_text(json.dumps(result, indent=1))
        return 0
    if bool(args.before) == bool(args.malloc):
        parser.error("give --before REV or --malloc")
    rev = subprocess.run(["git", "rev-parse", "--short", args.before or "HEAD"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout.strip()
    kinds = ["calibrated"] + (["trained"] if args.model else [])
    with tempfile.TemporaryDirectory(prefix="host_side_by_side_") as tmp:
        tree = REPO if args.malloc else Path(tmp) / "before"
        if not args.malloc:
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True, capture_output=True)
        mallocs = {"before": "default", "after": "retain" if args.malloc else "default"}
        try:
            rounds = []
            for n in range(args.rounds):
                result = {}
                for label, code in (("before", tree), ("after", REPO)):
                    result[label] = run_child(code, label, args, Path(tmp) / f"{label}{n}.json", mallocs[label])
                    for kind in kinds:
                        print(f"round {n + 1} {label:6s} {kind:10s} host {result[label][kind]['host_cpu_s_per_10k_words']:.4f} "
                              f"CPU s per 10k words, peak RSS {result[label]['max_rss_mb']:.0f} MB", flush=True)
                rounds.append(result)
        finally:
            if not args.malloc:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    summary = summarise(rounds, kinds)
    for kind in kinds:
        s = summary[kind]
        print(f"{kind}: after / before {s['after_over_before_median']:.2f} "
              f"(rounds {', '.join(f'{x:.2f}' for x in s['after_over_before_per_round'])}), "
              f"same predictions: {s['same_predictions']}")
    report = {"before": rev, "after": head, "malloc": mallocs, "model": args.model, "rounds": rounds, "summary": summary,
              "settings": {"repeats": args.repeats, "threads": args.threads}}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(f"-> {args.output}")
    return 0 if all(summary[k]["same_predictions"] for k in kinds) else 1


if __name__ == "__main__":
    sys.exit(main())
