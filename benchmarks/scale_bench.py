"""Notes/s of ``annotate``: the local engine vs Ray Data with 1 and 2 CPU workers
over the same notes, plus the fixed costs (starting the cluster; a job's actor
start and pipeline load, measured as a one-shard job of a few notes).

    python benchmarks/scale_bench.py [--notes 2000] [--words 60] [--backbone tiny|minilm] [--shard-size 250]

Needs ``ray[data]`` (the ``scale`` extra). Not a test: prints a table and writes
``results/scale.json``. GPU workers are not measured here.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict

from bench_common import DEFAULT_WORKDIR, MINILM, RESULTS_DIR, build_pipeline, log, machine_info, notes, print_table, tiny_encoder


def write_notes(path: Path, n: int, words: int) -> Path:
    with path.open("w", encoding="utf8") as f:
        for k, (text, _, _) in enumerate(notes(n, words, seed=1000)):
            f.write(json.dumps({"id": f"note-{k:05d}", "text": text}) + "\n")
    return path


def local_engine(model: Path, src: Path, out: Path, threads: int, batch_size: int) -> Dict[str, Any]:
    import spacy
    import torch

    from spacy_softprompt.annotate import annotate

    torch.set_num_threads(threads)
    start = time.perf_counter()
    nlp = spacy.load(model)
    load_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    report = annotate(nlp, src, out, output_format="jsonl", batch_size=batch_size, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"engine": f"local ({threads} torch thread{'s' if threads > 1 else ''})", "notes": report.written,
            "load_seconds": round(load_s, 2), "annotate_seconds": round(seconds, 2),
            "notes_per_second": round(report.written / seconds, 1), "cpu_seconds": round(cpu, 2),
            "notes_per_cpu_second": round(report.written / cpu, 1)}


def ray_engine(model: Path, src: Path, out: Path, workers: int, shard_size: int, batch_size: int) -> Dict[str, Any]:
    from spacy_softprompt.scale import annotate_on_ray

    result = annotate_on_ray(model, src, out, workers=workers, shard_size=shard_size, batch_size=batch_size,
                             progress=False)
    run = result["run"]
    return {"engine": f"ray, {workers} CPU worker{'s' if workers > 1 else ''} (1 thread each)", "notes": run["notes_done"],
            "pack_seconds": run["pack_seconds"], "annotate_seconds": run["annotate_seconds"],
            "total_seconds": run["seconds"], "notes_per_second": run["notes_per_second"],
            "cpu_seconds": run.get("worker_cpu_seconds"),
            "notes_per_cpu_second": round(run["notes_done"] / run["worker_cpu_seconds"], 1) if run.get("worker_cpu_seconds") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=2000)
    parser.add_argument("--words", type=int, default=60, help="words per synthetic note")
    parser.add_argument("--backbone", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "scale")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "scale.json")
    args = parser.parse_args()
    import ray

    work = args.workdir
    shutil.rmtree(work / "runs", ignore_errors=True)
    (work / "runs").mkdir(parents=True)
    backbone = str(tiny_encoder(work)) if args.backbone == "tiny" else MINILM
    model = work / f"pipeline-{args.backbone}"
    if not model.is_dir():
        build_pipeline(backbone).to_disk(model)
    src = write_notes(work / "runs" / "notes.jsonl", args.notes, args.words)
    info = machine_info()
    rows = [local_engine(model, src, work / "runs" / f"local{t}.jsonl", t, args.batch_size) for t in (1, 2)]
    log(f"local: {rows[0]['notes_per_second']} / {rows[1]['notes_per_second']} notes/s")

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - start
    small = write_notes(work / "runs" / "ten.jsonl", 10, args.words)
    fixed = ray_engine(model, small, work / "runs" / "ray-fixed", 1, args.shard_size, args.batch_size)
    for workers in (1, 2):
        rows.append(ray_engine(model, src, work / "runs" / f"ray{workers}", workers, args.shard_size, args.batch_size))
        log(f"ray x{workers}: {rows[-1]['notes_per_second']} notes/s")
    ray.shutdown()

    results = {
        "benchmark": "scale", "backbone": args.backbone, "notes": args.notes, "words_per_note": args.words,
        "shard_size": args.shard_size, "batch_size": args.batch_size, "machine": info,
        "cluster_start_seconds": round(cluster_start, 2),
        "job_fixed_seconds_10_notes": fixed["annotate_seconds"],
        "rows": rows,
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2), encoding="utf8")
    print(f"{args.notes} notes x {args.words} words, backbone {args.backbone}; cluster start {cluster_start:.1f} s; "
          f"a 10-note Ray job {fixed['annotate_seconds']} s (actor start + pipeline load)")
    print_table(["engine", "notes/s (wall)", "annotate s", "notes / CPU s", "notes"],
                [[r["engine"], r["notes_per_second"], r["annotate_seconds"], r["notes_per_cpu_second"], r["notes"]] for r in rows])
    print(f"load average at start {info['load_avg_at_start']}, at end {[round(x, 2) for x in os.getloadavg()]}")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
