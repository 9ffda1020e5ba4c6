"""Training's memory and CPU time under glibc's malloc settings, side by side.

``train`` leaves glibc's malloc alone (``--malloc default``). glibc then raises
its mmap threshold to the largest block freed so far (up to 32 MiB), so most
of a training step's blocks come from the heap, which fragments and grows
slowly over a run. A fixed threshold (``MALLOC_MMAP_THRESHOLD_``, which also
turns the adjustment off) hands large blocks back to the kernel when freed and
pays in page faults. This benchmark runs the same ``python -m spacy_softprompt
train`` once per variant, **all at once** (so they share the machine's load
alike), and reports per variant:

* user and system CPU seconds, and CPU time against the first variant
  (``os.wait4``: the whole process);
* minor page faults;
* the kernel's peak RSS of the process, and its RSS sampled every
  ``--sample-seconds``: the median of the first and of the last third of the run.

Variants: ``default`` (the variable unset) or a threshold in bytes
(``4194304``). The default run is the DDI fine-tuning run of the study
(``configs/tok_finetune_cpu.cfg`` on ``corpus/study/drugbank-*.spacy``:
``spacy project run study-data-transfer``); options this script does not
know (``--paths.dev …``, ``--training.…``) go to ``train``, as does anything after ``--``.

Run: ``python -m spacy_softprompt bench train-malloc [--variants default,4194304,131072]
[--steps 150] [--threads 1]``; writes ``benchmarks/results/train_malloc.json``.
Pause other work on the machine first (the variants' wall times are not compared).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import bench_common as bc  # noqa: E402
from measure import tree_rss_mb  # noqa: E402

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
#: glibc's mallopt takes an int; its own cap for the threshold is HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
MAX_THRESHOLD = 32 * 1024 * 1024


def parse_variant(text: str) -> Optional[int]:
    """``default`` -> None (glibc's own behaviour); a number -> a fixed mmap threshold in bytes."""
    text = text.strip().lower()
    if text == "default":
        return None
    if not text.isdigit() or not 0 < int(text) <= MAX_THRESHOLD:
        raise ValueError(f"variant {text!r}: use 'default' or a threshold in bytes, 1 to {MAX_THRESHOLD}")
    return int(text)


def variant_name(threshold: Optional[int]) -> str:
    return "default" if threshold is None else f"mmap threshold {threshold}"


def variant_env(threshold: Optional[int], threads: int, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of one variant's ``train``: the threshold set or removed, ``threads`` threads."""
    env = dict(os.environ if base is None else base)
    env.pop(MMAP_ENV, None)
    if threshold is not None:
        env[MMAP_ENV] = str(threshold)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def summarise(
    samples: Sequence[Tuple[float, float]], user_s: float, system_s: float, max_rss_kb: int, minor_faults: int
) -> Dict[str, Any]:
    """One variant's figures from its RSS samples ``(seconds, MB)`` and its rusage."""
    rss = [mb for _, mb in samples if mb > 0]
    third = max(1, len(rss) // 3)
    return {
        "user_cpu_s": round(user_s, 1),
        "system_cpu_s": round(system_s, 1),
        "cpu_s": round(user_s + system_s, 1),
        "minor_page_faults": minor_faults,
        "peak_rss_mb": round(max_rss_kb / 1024),
        "median_rss_mb_first_third": round(statistics.median(rss[:third])) if rss else None,
        "median_rss_mb_last_third": round(statistics.median(rss[-third:])) if rss else None,
        "rss_samples_mb": [[round(t), round(mb)] for t, mb in samples],
    }


def with_ratios(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Add each variant's CPU time over the first variant's."""
    reference = results[0]["cpu_s"]
    for result in results:
        result["cpu_vs_first"] = round(result["cpu_s"] / reference, 3) if reference else None
    return results


def run_side_by_side(
    command: Sequence[str], thresholds: Sequence[Optional[int]], threads: int, sample_seconds: float, workdir: Path
) -> List[Dict[str, Any]]:
    """Start one ``command + --output DIR`` per variant at once; sample RSS until all have ended."""
    runs = []
    for i, threshold in enumerate(thresholds):
        output = workdir / f"variant{i}"
        log = open(workdir / f"variant{i}.log", "w")
        proc = subprocess.Popen(
            [*command, "--output", str(output)], stdout=log, stderr=subprocess.STDOUT,
            env=variant_env(threshold, threads), cwd=REPO,
        )
        runs.append({"threshold": threshold, "proc": proc, "log": log, "samples": [], "rusage": None, "rc": None})
    start = time.monotonic()
    while any(run["rc"] is None for run in runs):
        for run in runs:
            if run["rc"] is not None:
                continue
            pid, status, rusage = os.wait4(run["proc"].pid, os.WNOHANG)
            if pid:
                run["rc"], run["rusage"] = os.waitstatus_to_exitcode(status), rusage
                run["proc"].returncode = run["rc"]  # reaped here (for its rusage): Popen must not wait again
                run["log"].close()
            else:
                run["samples"].append((time.monotonic() - start, tree_rss_mb(run["proc"].pid)))
        time.sleep(sample_seconds)
    results = []
    for i, run in enumerate(runs):
        if run["rc"] != 0:
            tail = (workdir / f"variant{i}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{variant_name(run['threshold'])}: train exited with {run['rc']}:\n{tail}")
        usage = run["rusage"]
        summary = summarise(run["samples"], usage.ru_utime, usage.ru_stime, usage.ru_maxrss, usage.ru_minflt)
        results.append({"variant": variant_name(run["threshold"]), MMAP_ENV: run["threshold"], **summary})
    return with_ratios(results)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--variants", default="default,4194304,131072", help="'default' and/or mmap thresholds in bytes")
    parser.add_argument("--config", default="configs/tok_finetune_cpu.cfg")
    parser.add_argument("--train", default="corpus/study/drugbank-train.spacy")
    parser.add_argument("--dev", default="corpus/study/drugbank-dev.spacy")
    parser.add_argument("--backbone", default=bc.MINILM)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=bc.RESULTS_DIR / "train_malloc.json")
    args, unknown = parser.parse_known_args(argv)
    extra = unknown + extra  # options this script does not know go to train (the `bench` CLI drops a bare --)
    try:
        thresholds = [parse_variant(v) for v in bc.csv(args.variants)]
    except ValueError as err:
        parser.error(str(err))
    for path in (args.config, args.train, args.dev):
        if not (REPO / path).exists() and not Path(path).exists():
            raise SystemExit(f"error: {path} not found (the DDI study data: spacy project run study-data-transfer)")
    command = [
        sys.executable, "-m", "spacy_softprompt", "train", str(args.config), "--malloc", "default",
        "--paths.train", str(args.train), "--paths.dev", str(args.dev), "--paths.backbone", str(args.backbone),
        "--training.max_steps", str(args.steps), "--training.eval_frequency", "1000000", *extra,
    ]
    report = bc.new_report("train_malloc", args, command=" ".join(command[1:]), extra_train_options=extra)
    bc.log(f"{len(thresholds)} trainings of {args.steps} steps at once, {args.threads} thread(s) each")
    with tempfile.TemporaryDirectory(prefix="train_malloc_") as tmp:
        report["variants"] = run_side_by_side(command, thresholds, args.threads, args.sample_seconds, Path(tmp))
    bc.print_table(
        ("variant", "user CPU s", "system CPU s", "CPU vs first", "median RSS MB, first / last third", "peak RSS MB", "minor faults"),
        [
            (v["variant"], v["user_cpu_s"], v["system_cpu_s"], f"{v['cpu_vs_first']}x",
             f"{v['median_rss_mb_first_third']} / {v['median_rss_mb_last_third']}", v["peak_rss_mb"], v["minor_page_faults"])
            for v in report["variants"]
        ],
    )
    return bc.finish(report, args.output)


if __name__ == "__main__":
    sys.exit(main())
