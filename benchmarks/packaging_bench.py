"""Packaging: wheel size full vs prompt-only, and memory of several prompt-only pipelines.

Per backbone:

* the shipped soft-frozen pipeline (configs/soft-frozen_cpu.cfg: transformer
  with a P=5 deep prompt since 2026-12-05, frozen backbone + ner +
  relation_extractor; packaging.json was re-measured then) is
  initialised and saved twice, with ``save_backbone = true`` (full: backbone
  weights inside) and ``save_backbone = false`` (prompt-only: the backbone is
  referred to by name and SHA-256); each is built into a real wheel with
  ``python -m spacy package ... --build wheel``;
* memory: a fresh process loads one prompt-only pipeline, then a second one
  (another prompt-only pipeline over the same backbone: different prompt
  weights), running a note through each; process RSS after imports, after
  the first and after the second.  The same with two *full* pipelines as the
  reference (two backbone copies).  Target: two prompt-only pipelines <= 1.1x
  the memory of one (the process-level backbone cache shares the backbone).

Run: ``python benchmarks/packaging_bench.py [--backbones minilm,gatortron-base-shaped]
[--layers 24] [--no-wheels]``; writes ``benchmarks/results/packaging.json``.
"""
import gc
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402

RESULTS = bc.RESULTS_DIR / "packaging.json"
TARGET_WHEEL_SHARE = 0.02
TARGET_TWO_OVER_ONE = 1.1
MODEL = "components.transformer.model"


def worker_save(spec):
    """Save full and prompt-only pipelines (two prompt seeds each) under spec['out']."""
    out = Path(spec["out"])
    sizes = {}
    for kind, save_backbone in (("full", True), ("prompt-only", False)):
        for seed in (0, 1):
            nlp = bc.build_pipeline(spec["backbone"], seed=seed, save_backbone=save_backbone, init_seed=seed)
            path = out / f"{kind}-{seed}"
            nlp.to_disk(path)
            sizes[f"{kind}-{seed}"] = bc.dir_size(path)
            del nlp
            gc.collect()
    return {"pipeline_bytes": sizes}


def worker_memory(spec):
    """RSS after imports, after loading (and running) one pipeline, after a second."""
    import spacy
    import torch  # noqa: F401

    import spacy_softprompt  # noqa: F401

    text = bc.notes(1, 200, seed=3)[0][0]
    gc.collect()
    base = bc.rss_mb()
    loaded, rss = [], []
    for path in spec["paths"]:
        nlp = spacy.load(path)
        nlp(text)
        loaded.append(nlp)
        gc.collect()
        rss.append(bc.rss_mb())
    encoders = [nlp.get_pipe("transformer").model.encoder for nlp in loaded]
    shared = len(encoders) > 1 and all(e.backbone is encoders[0].backbone for e in encoders)
    return {"after_imports_mb": base, "after_each_mb": rss, "backbone_shared": shared}


def build_wheel(pipeline: Path, packages: Path, name: str) -> Path:
    packages.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "spacy", "package", str(pipeline), str(packages), "--name", name,
           "--version", "0.0.1", "--build", "wheel", "--force"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"spacy package failed for {pipeline}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    wheels = sorted(packages.rglob(f"*{name}*.whl"))
    if not wheels:
        raise RuntimeError(f"no wheel built for {pipeline}")
    return wheels[-1]


WORKERS = {"save": worker_save, "memory": worker_memory}


def main(argv=None) -> int:
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--backbones", default="minilm,gatortron-base-shaped")
    parser.add_argument("--layers", type=int, default=24, help="layers of the GatorTron-base-shaped model")
    parser.add_argument("--no-wheels", action="store_true", help="skip building wheels (pipeline folder sizes only)")
    parser.add_argument("--keep", action="store_true", help="keep the saved pipelines and wheels (printed path)")
    parser.add_argument("--workdir", type=Path, default=bc.DEFAULT_WORKDIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if bc.serve_worker(args, WORKERS):
        return 0

    report = bc.new_report("packaging", args, backbones={})
    rows = []
    for label, source in bc.backbone_sources(bc.csv(args.backbones), args.workdir, args.layers).items():
        tmp = Path(tempfile.mkdtemp(prefix="packaging_bench_", dir=args.workdir if args.workdir.exists() else None))
        try:
            start = time.perf_counter()
            bc.log(f"{label}: saving full and prompt-only pipelines ...")
            saved = bc.run_worker(HERE / "packaging_bench.py", "save", {"backbone": source, "out": str(tmp)})
            entry = {"source": source, **saved, "save_s": time.perf_counter() - start}
            if not args.no_wheels:
                entry["wheel_bytes"], entry["wheel_build_s"] = {}, {}
                for kind in ("full", "prompt-only"):
                    bc.log(f"{label}: spacy package --build wheel ({kind}) ...")
                    t0 = time.perf_counter()
                    wheel = build_wheel(tmp / f"{kind}-0", tmp / f"packages-{kind}", f"bench_{kind.replace('-', '_')}")
                    entry["wheel_build_s"][kind] = time.perf_counter() - t0
                    entry["wheel_bytes"][kind] = wheel.stat().st_size
                    entry.setdefault("wheel_files", {})[kind] = wheel.name
                    shutil.rmtree(tmp / f"packages-{kind}", ignore_errors=True)
                share = entry["wheel_bytes"]["prompt-only"] / entry["wheel_bytes"]["full"]
                entry["wheel_share_prompt_only"] = share
                report["targets"][f"{label}: prompt-only wheel / full wheel"] = bc.target_entry(100 * share, 100 * TARGET_WHEEL_SHARE, False, unit="%")
            folder_share = entry["pipeline_bytes"]["prompt-only-0"] / entry["pipeline_bytes"]["full-0"]
            entry["folder_share_prompt_only"] = folder_share
            memory = {}
            for kind in ("prompt-only", "full"):
                bc.log(f"{label}: memory of one vs two {kind} pipelines ...")
                two = bc.run_worker(HERE / "packaging_bench.py", "memory", {"paths": [str(tmp / f"{kind}-0"), str(tmp / f"{kind}-1")]})
                one, both = two["after_each_mb"]
                base = two["after_imports_mb"]
                memory[kind] = {**two, "two_over_one": both / one, "two_over_one_above_imports": (both - base) / max(one - base, 1e-9)}
            entry["memory"] = memory
            report["targets"][f"{label}: RSS two prompt-only pipelines / one"] = bc.target_entry(
                memory["prompt-only"]["two_over_one"], TARGET_TWO_OVER_ONE, False,
                note=f"above imports: {memory['prompt-only']['two_over_one_above_imports']:.2f}x; two full pipelines: {memory['full']['two_over_one']:.2f}x")
            report["backbones"][label] = entry
            wheel = entry.get("wheel_bytes", {})
            rows.append((label, f"{entry['pipeline_bytes']['full-0'] / 2**20:.1f}", f"{entry['pipeline_bytes']['prompt-only-0'] / 2**20:.2f}",
                         f"{wheel['full'] / 2**20:.1f}" if wheel else "-", f"{wheel['prompt-only'] / 2**20:.2f}" if wheel else "-",
                         f"{100 * entry['wheel_share_prompt_only']:.2f}%" if wheel else f"{100 * folder_share:.2f}% (folders)",
                         f"{memory['prompt-only']['after_each_mb'][0]:.0f} -> {memory['prompt-only']['after_each_mb'][1]:.0f} ({memory['prompt-only']['two_over_one']:.2f}x)",
                         f"{memory['full']['after_each_mb'][0]:.0f} -> {memory['full']['after_each_mb'][1]:.0f} ({memory['full']['two_over_one']:.2f}x)"))
        finally:
            if args.keep:
                bc.log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    print()
    bc.print_table(("backbone", "full folder MiB", "prompt-only folder MiB", "full wheel MiB", "prompt-only wheel MiB",
                    "prompt-only share", "RSS MB 1 -> 2 prompt-only", "RSS MB 1 -> 2 full"), rows)
    return bc.finish(report, args.output)


if __name__ == "__main__":
    sys.exit(main())
