"""Run the benchmarks of a source checkout: ``python -m spacy_softprompt bench NAME [OPTIONS]``.

The benchmark scripts live in ``benchmarks/`` next to the package (they are not
installed with the wheel).  Each runs in its own process, prints its table and
writes ``benchmarks/results/<name>.json``; :func:`run_bench` returns that JSON.

    from spacy_softprompt.bench import run_bench
    report = run_bench("inference", backbones="minilm", docs=8, repeats=2)

Options are the script's command-line flags with ``_`` for ``-``
(``gt_docs=2`` -> ``--gt-docs 2``); ``True`` passes a bare flag, ``False``/``None``
leave it out, lists are joined with commas.  ``python benchmarks/<file> --help``
lists them.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

#: name -> (script in benchmarks/, default results file in benchmarks/results/, what it measures)
BENCHMARKS: Dict[str, tuple] = {
    "speed": ("speed_bench.py", "speed.json", "default pipeline vs a bare forward of its backbone on the dev notes (CPU), host CPU s per 10k words per stage"),
    "host-side-by-side": ("host_side_by_side.py", "host_side_by_side.json", "host CPU s per 10k words of this checkout vs an earlier revision (--before REV), alternating processes, predictions compared"),
    "decode": ("decode_bench.py", "decode.json", "token_ner's constrained decoding of this checkout vs an earlier revision (--before REV), calibrated and confident scores, tags compared"),
    "inference": ("inference_bench.py", "inference.json", "words/s: soft prompt vs spacy-transformers vs bare forward; MRC cost per label"),
    "training": ("training_bench.py", "training.json", "s/step, peak memory, trainable share: frozen vs unfrozen"),
    "packaging": ("packaging_bench.py", "packaging.json", "wheel size full vs prompt-only; memory of two prompt-only pipelines"),
    "scaling": ("scaling_bench.py", "scaling.json", "time and memory vs note length and corpus size"),
    "train-malloc": ("train_malloc_bench.py", "train_malloc.json", "train's CPU time and memory under glibc's default vs fixed mmap thresholds, the runs side by side"),
    "encoder": ("encoder_bench.py", "encoder.json", "encoder only: throughput, training step, memory, size (transformer + ner)"),
    "mrc": ("mrc_bench.py", "mrc_vs_single.json", "MRC mode vs single pass throughput"),
    "baseline-hf": ("baseline_hf_tokcls.py", "baseline_hf_tokcls.json", "peer baseline: HF token classification fine-tuning, dev n2c2 F1 per epoch"),
    "baseline-peft": ("baseline_peft.py", "baseline_peft_prefix.json", "peer baselines: PEFT prefix tuning / LoRA on the frozen backbone (--method prefix|lora), dev n2c2 F1 per epoch"),
    "baseline-cnn": ("baseline_spacy_cnn.py", "baseline_spacy_cnn.json", "peer baseline: spaCy CNN ner (spacy train), dev n2c2 F1"),
    "gpu": ("gpu_bench.py", "gpu.json", "default pipeline on a GPU: per-stage profile, pipe and N workers vs bare forward, train steps unfrozen/frozen, fp16/bf16 vs fp32, --large"),
    "concept-head": ("concept_head_bench.py", "concept_head.json", "token_ner vs transition-based ner on the same transformer output"),
    "nproc": ("nproc_bench.py", "nproc.json", "annotate words/s with 1 vs N worker processes (and nlp.pipe n_process)"),
    "scale": ("scale_bench.py", "scale.json", "annotate notes/s: local engine vs Ray Data with 1 and 2 CPU workers; cluster start cost"),
}
#: what ``all`` runs, in order
ALL = ("inference", "training", "packaging", "scaling")
BENCHMARK_NAMES: List[str] = list(BENCHMARKS) + ["all"]


class BenchmarkError(RuntimeError):
    """A benchmark could not run (missing checkout, unknown name, failed run)."""


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the source checkout (``SPACY_SOFTPROMPT_BENCHMARKS`` overrides)."""
    env = os.environ.get("SPACY_SOFTPROMPT_BENCHMARKS")
    folder = Path(env) if env else Path(__file__).resolve().parent.parent / "benchmarks"
    if not folder.is_dir():
        raise BenchmarkError(
            f"no benchmarks folder at {folder}: the benchmarks ship with the source checkout, not the wheel "
            "(set SPACY_SOFTPROMPT_BENCHMARKS to its benchmarks/ folder)"
        )
    return folder


def options_to_argv(options: Dict[str, Any]) -> List[str]:
    argv: List[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def _output_path(name: str, argv: Sequence[str]) -> Path:
    for i, arg in enumerate(argv):
        if arg == "--output" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--output="):
            return Path(arg.split("=", 1)[1])
    return benchmarks_dir() / "results" / BENCHMARKS[name][1]


def run_bench_argv(name: str, argv: Sequence[str] = ()) -> Optional[Dict[str, Any]]:
    """Run benchmark ``name`` with command-line ``argv``; returns its results JSON
    (``None`` for ``--help``).  Raises :class:`BenchmarkError` when it fails."""
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARK_NAMES)}")
    script = benchmarks_dir() / BENCHMARKS[name][0]
    if not script.is_file():
        raise BenchmarkError(f"{script} is missing")
    argv = [str(a) for a in argv]
    result = subprocess.run([sys.executable, str(script), *argv], cwd=str(script.parent.parent))
    if result.returncode != 0:
        raise BenchmarkError(f"benchmark {name!r} failed to run (exit status {result.returncode})")
    if any(a in ("-h", "--help") for a in argv):
        return None
    output = _output_path(name, argv)
    return json.loads(output.read_text(encoding="utf8")) if output.is_file() else None


def run_bench(name: str, **options: Any) -> Any:
    """Run one benchmark (or ``"all"``: a dict name -> results) and return its results."""
    if name == "all":
        if "output" in options:
            raise BenchmarkError("'all' writes each benchmark's own results file; drop 'output'")
        return {each: run_bench_argv(each, options_to_argv(options)) for each in ALL}
    return run_bench_argv(name, options_to_argv(options))


def bench_command(name: str, args: Sequence[str] = ()) -> int:
    """For the CLI: run ``name`` with raw ``args``; returns an exit status (the
    figures themselves never fail a run, only a failure to run does)."""
    try:
        if name == "all":
            for each in ALL:
                print(f"\n=== {each} ===", flush=True)
                run_bench_argv(each, args)
        else:
            run_bench_argv(name, args)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n")[0] + "\n\nbenchmarks:")
        for name, (script, _, what) in BENCHMARKS.items():
            print(f"  {name:10s} benchmarks/{script}: {what}")
        print(f"  {'all':10s} {', '.join(ALL)} in turn (shared options only)")
        return 0 if argv else 2
    return bench_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
