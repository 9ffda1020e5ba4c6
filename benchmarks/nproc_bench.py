"""Several processes: annotate words/s with 1 and N worker processes, side by side.

A pipeline built from ``configs/<config>`` (default ``soft_cpu.cfg``: the
offline MiniLM, P=20 deep prompt, transformer + ner + relation_extractor),
initialised and updated ``--steps`` times on the toy docs (throughput does not
depend on training), annotates a folder of notes (default: the 30
maccrobat2020/dev notes) alternately with ``--n-process 1`` and ``N``, in one
parent process, ``--repeats`` times; also spaCy's own ``nlp.pipe(n_process=N)``
(forked workers, one torch thread each). Per run: wall seconds, CPU seconds of
the parent and its finished workers, words/s (spaCy tokens), words per CPU
second, the 1-minute load average. Outputs of 1 and N processes must be
identical. Run: ``python benchmarks/nproc_bench.py [--notes DIR] [--n-process 2]
[--repeats 2]``. Writes ``benchmarks/results/nproc.json``.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "nproc.json"
NOTES = REPO.parent / "shared" / "corpora" / "maccrobat2020" / "dev"


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=Path, default=NOTES, help="folder of .txt notes")
    parser.add_argument("--config", default="soft_cpu.cfg")
    parser.add_argument("--n-process", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    import multiprocessing

    import torch
    from spacy.training import Example
    from spacy.util import fix_random_seed, load_config, load_model_from_config

    from spacy_softprompt.annotate import annotate, iter_inputs
    from spacy_softprompt.parallel import available_cores, worker_threads
    from spacy_softprompt.testing import toy_docs

    fix_random_seed(0)
    nlp = load_model_from_config(load_config(REPO / "configs" / args.config, interpolate=True), auto_fill=True, validate=True)
    examples = [Example(nlp.make_doc(d.text), d) for d in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    optimizer = nlp.resume_training()
    for _ in range(args.steps):
        nlp.update(examples, sgd=optimizer)
    texts = [text for _, text, error in iter_inputs(args.notes) if error is None]
    words = sum(len(nlp.make_doc(text)) for text in texts)
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for n in (1, args.n_process):
                out = Path(tmp) / f"n{n}_r{rep}.jsonl"
                start, cpu = time.perf_counter(), _cpu_seconds()
                annotate(nlp, args.notes, out, output_format="jsonl", batch_size=args.batch_size, n_process=n, progress=False)
                rows.append(_row("annotate", n, rep, words, time.perf_counter() - start, _cpu_seconds() - cpu))
                outputs.setdefault(n, out.read_text(encoding="utf8"))
            start, cpu = time.perf_counter(), _cpu_seconds()
            for _ in nlp.pipe(texts, batch_size=args.batch_size, n_process=args.n_process):
                pass
            multiprocessing.active_children()  # reap the forked workers so their CPU time counts
            rows.append(_row("nlp.pipe", args.n_process, rep, words, time.perf_counter() - start, _cpu_seconds() - cpu))
    report = {
        "notes": len(texts),
        "words": words,
        "cores": available_cores(),
        "parent_torch_threads": torch.get_num_threads(),
        "worker_torch_threads": worker_threads(args.n_process),
        "identical_outputs": outputs[1] == outputs[args.n_process],
        "runs": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1), encoding="utf8")
    print(json.dumps(report, indent=1))


def _row(path: str, n: int, rep: int, words: int, seconds: float, cpu: float) -> dict:
    row = {
        "path": path,
        "n_process": n,
        "repeat": rep,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "words_per_s": round(words / seconds, 1),
        "words_per_cpu_s": round(words / max(cpu, 1e-9), 1),
        "load_1min": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


if __name__ == "__main__":
    main()
