"""``token_ner``'s constrained decoding (``biluo_decoding.decode``) of this checkout
against an earlier revision, side by side in one process.

The earlier revision's ``spacy_softprompt/heads/biluo_decoding.py`` is read with
``git show REV:...`` and imported as its own module; both decode the same score
batches, alternately, and their tags are compared (a speed change must not
change a tag).  Two kinds of scores per label count:

* ``calibrated``: random scores with the ``O`` score raised so that the gold
  share of entity tokens (20%) is tagged, what ``bench speed`` / ``bench gpu``
  do with untrained heads; most margins are small, so much of each row is in
  doubt and goes through the Viterbi (the worst case);
* ``confident``: a random valid path leads every token by 3 points, plus
  noise (a trained tagger: little is in doubt).

Run: ``python -m spacy_softprompt bench decode --before eadb40d``; prints CPU
ms per batch and s per 10k words, writes ``benchmarks/results/decode.json``.
"""
import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODULE = "spacy_softprompt/heads/biluo_decoding.py"
RESULTS = HERE / "results" / "decode.json"


def load_revision(rev: str):
    """The decoding module as it was at ``rev`` (git show), imported under its own name."""
    source = subprocess.run(["git", "show", f"{rev}:{MODULE}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="decode_bench_"))
    path = folder / "biluo_decoding_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("biluo_decoding_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrated_scores(rng: numpy.random.Generator, total: int, K: int, entity_share: float) -> numpy.ndarray:
    scores = rng.normal(size=(total, K)).astype("float32")
    margin = scores[:, 1:].max(axis=1) - scores[:, 0]
    scores[:, 0] += numpy.quantile(margin, 1.0 - entity_share)
    return scores


def confident_scores(rng: numpy.random.Generator, lengths: numpy.ndarray, n_labels: int, lead: float = 3.0) -> numpy.ndarray:
    """A random valid BILUO path per row (entities of 1-4 tokens over ~20% of tokens) leads by ``lead``."""
    K = 1 + 4 * n_labels
    scores = rng.normal(size=(int(lengths.sum()), K)).astype("float32")
    tags: List[int] = []
    for n in lengths:
        t = 0
        while t < n:
            size = int(rng.integers(1, 5))
            if rng.random() < 0.06 and t + size <= n:
                first = 1 + 4 * int(rng.integers(n_labels))
                tags += [first + 3] if size == 1 else [first] + [first + 1] * (size - 2) + [first + 2]
                t += size
            else:
                tags.append(0)
                t += 1
    scores[numpy.arange(len(tags)), tags] += lead
    return scores


def cpu_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median CPU seconds of ``repeats`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        runs.append(time.process_time() - start)
    return float(numpy.median(runs))


def main(argv=None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision to compare with")
    parser.add_argument("--labels", default="4,12,40", help="label counts (K = 1 + 4 x labels)")
    parser.add_argument("--rows", type=int, default=32, help="notes per batch")
    parser.add_argument("--words", type=int, default=417, help="tokens per note")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    from spacy_softprompt.heads import biluo_decoding as after

    before = load_revision(args.before)
    rng = numpy.random.default_rng(args.seed)
    lengths = numpy.full(args.rows, args.words, dtype="int64")
    total = int(lengths.sum())
    cases = []
    for n_labels in (int(x) for x in args.labels.split(",")):
        K = 1 + 4 * n_labels
        for kind, scores in (
            ("calibrated", calibrated_scores(rng, total, K, entity_share=0.2)),
            ("confident", confident_scores(rng, lengths, n_labels)),
        ):
            same = bool(numpy.array_equal(before.decode(scores, lengths), after.decode(scores, lengths)))
            times = {"before": [], "after": []}
            for _ in range(3):  # alternate the two versions
                times["before"].append(cpu_seconds(lambda: before.decode(scores, lengths), args.repeats))
                times["after"].append(cpu_seconds(lambda: after.decode(scores, lengths), args.repeats))
            b, a = min(times["before"]), min(times["after"])
            cases.append({
                "labels": n_labels, "tags": K, "scores": kind, "tokens": total,
                "before_ms": 1e3 * b, "after_ms": 1e3 * a,
                "before_s_per_10k_words": b * 1e4 / total, "after_s_per_10k_words": a * 1e4 / total,
                "after_vs_before": a / b if b else None, "identical_tags": same,
            })
    report = {
        "benchmark": "decode", "before": args.before,
        "after": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "settings": vars(args), "cases": cases,
    }
    print(f"| labels | scores | before ms | after ms | after / before | s per 10k words (after) | same tags |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for c in cases:
        print(f"| {c['labels']} | {c['scores']} | {c['before_ms']:.1f} | {c['after_ms']:.1f} | "
              f"{c['after_vs_before']:.2f} | {c['after_s_per_10k_words']:.4f} | {c['identical_tags']} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    if not all(c["identical_tags"] for c in cases):
        print("tags differ between the two versions", file=sys.stderr)
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
