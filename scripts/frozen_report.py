"""The frozen-backbone table from scripts/frozen_table.sh's metrics files.

usage: python scripts/frozen_report.py benchmarks/results/frozen [--systems "soft-frozen soft-lora ..."]
       [--reference soft-frozen] [--output docs/frozen_table.md] [--training benchmarks/results/training.json]
       python scripts/frozen_report.py --run-info MODEL_DIR [--wall-s S]   (prints a run's parameters as JSON)

Per system (``<system>-seed<S>.json`` files, evaluate's or a baseline's metrics with
per-document counts): seeds, trainable share of the parameters and the part of them
trained for the entities, step time and training memory relative to the unfrozen main
job (``bench training``), entity / relation strict F1 as mean ± sample sd, and the
paired bootstrap 95% interval of each system minus the reference (``compare``), in points. Writes the markdown table and a JSON
beside it (same stem), and prints the table.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from spacy_softprompt.compare import compare_files
from spacy_softprompt.study.curve import convergence

DESCRIPTIONS = {
    "soft": "soft prompts, backbone unfrozen (the main job, 600 steps)",
    "soft-frozen": "soft prompts (deep, P=5), frozen backbone (the shipped soft-frozen)",
    "peft-prefix7": "PEFT prefix tuning (7 virtual tokens: no fewer parameters than soft-frozen's entity path)",
    "soft-frozen-p20": "soft prompts (deep, P=20), frozen backbone",
    "peft-prefix22": "PEFT prefix tuning (22 virtual tokens: no fewer parameters than soft-frozen-p20's entity path)",
    "peft-prefix": "PEFT prefix tuning (20 virtual tokens), frozen backbone",
    "soft-lora": "soft prompts (deep, P=20) + LoRA r=8, frozen backbone",
    "peft-lora": "PEFT LoRA r=8, frozen backbone",
}


RELATION_FACTORIES = ("relation_extractor",)
# training bench run (benchmarks/training_bench.py) of each system, for step time and memory
TRAINING_RUNS = {
    "soft": "unfrozen P=20 deep",
    "soft-frozen": "frozen P=5 deep",
    "soft-frozen-p20": "frozen P=20 deep",
    "soft-lora": "frozen P=20 deep + LoRA r8",
}


def pipeline_parameters(model_dir: Path) -> Dict[str, Any]:
    """Trainable and total parameters of a trained pipeline (the encoder's parameters that
    require a gradient plus every head parameter, of the encoder's plus the heads'), per part,
    and ``entity_path``: what trains for the entities alone (encoder's trainable part plus
    the concept heads, i.e. everything but the relation heads)."""
    import spacy

    nlp = spacy.load(model_dir)
    encoder = nlp.get_pipe("transformer").model.encoder
    parts = {"transformer": sum(p.numel() for p in encoder.parameters() if p.requires_grad)}
    total = sum(p.numel() for p in encoder.parameters())
    relation_parts = []
    for name, pipe in nlp.pipeline:
        if name == "transformer" or not hasattr(pipe, "model"):
            continue
        size = 0
        for node in pipe.model.walk():
            if node.name.startswith("transformer-listener"):
                continue
            size += sum(int(node.get_param(param).size) for param in node.param_names if node.has_param(param))
        parts[name] = size
        total += size
        if nlp.get_pipe_meta(name).factory in RELATION_FACTORIES:
            relation_parts.append(name)
    trainable = sum(parts.values())
    entity_path = trainable - sum(parts[name] for name in relation_parts)
    return {"trainable": trainable, "total": total, "entity_path": entity_path, "parts": parts}


def _parameters(seed_files: List[Path]) -> Optional[Dict[str, int]]:
    """Trainable / total parameters (and the entity path's, where known) from the runs'
    ``runs/<stem>.json`` (written by ``--run-info`` for our pipelines, the baseline's own
    report for the PEFT peers, whose every trained parameter serves the entities). The
    seeds share one architecture; the first file that names the entity path wins."""
    found: Optional[Dict[str, int]] = None
    for seed_file in seed_files:
        info = seed_file.parent / "runs" / seed_file.name
        if not info.is_file():
            continue
        data = json.loads(info.read_text())
        params = data["parameters"]
        counts = {"trainable": int(params["trainable"]), "total": int(params["total"])}
        if "entity_path" in params:
            counts["entity_path"] = int(params["entity_path"])
        elif str(data.get("benchmark", "")).startswith("baseline_peft"):
            counts["entity_path"] = counts["trainable"]
        if found is None or ("entity_path" in counts and "entity_path" not in found):
            found = counts
    return found


def run_curve(seed_file: Path) -> List[Dict[str, Any]]:
    """A run's dev entity strict F1 curve as ``{"step", "score"}`` points: our pipelines'
    ``runs/<stem>.curve.json`` (``train --curve``; steps), a PEFT peer's per-epoch scores in its
    report (epochs); [] when the run left none."""
    runs = seed_file.parent / "runs"
    curve_file = runs / f"{seed_file.stem}.curve.json"
    if curve_file.is_file():
        points = json.loads(curve_file.read_text())
        return [{"step": p["step"], "score": p["ents_strict_f"]} for p in points if "ents_strict_f" in p]
    info = runs / seed_file.name
    if info.is_file():
        epochs = json.loads(info.read_text()).get("epochs") or []
        return [{"step": e["epoch"], "score": e["ents_strict_f"]} for e in epochs if "ents_strict_f" in e]
    return []


def run_convergence(seed_file: Path) -> Dict[str, Any]:
    """The convergence rule of the study (``study.curve.convergence``: best dev entity strict F1
    not improved by >= 0.5 points over the last quarter of the run) on a run's curve."""
    found = convergence(run_curve(seed_file))
    return {"seed": seed_file.stem.rsplit("-seed", 1)[1], **found}


def _converged(runs: List[Dict[str, Any]]) -> str:
    known = [r for r in runs if r["converged"] is not None]
    if not known:
        return "–"
    best = ", ".join(str(r["best_step"]) for r in known)
    missing = f"; {len(runs) - len(known)} without a curve" if len(known) < len(runs) else ""
    return f"{sum(r['converged'] for r in known)}/{len(known)} (best at {best}{missing})"


def plot_curves(folder: Path, systems: List[str], path: Path) -> Optional[Path]:
    """F1 vs training: dev entity strict F1 of every stored run, our pipelines by step (left),
    the PEFT peers by epoch (right), one colour per system, one line per seed. None without
    matplotlib (``pip install 'spacy-softprompt[plots]'``) or without curves."""
    try:
        from spacy_softprompt.study.plots import pyplot
        plt = pyplot()
    except ImportError:
        return None
    panels: Dict[bool, List[tuple]] = {False: [], True: []}
    for system in systems:
        for seed_file in sorted(folder.glob(f"{system}-seed*.json")):
            points = run_curve(seed_file)
            if points:
                panels[system.startswith("peft-")].append((system, seed_file.stem.rsplit("-seed", 1)[1], points))
    if not any(panels.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colours = {system: f"C{i}" for i, system in enumerate(systems)}
    for ax, peft, xlabel in ((axes[0], False, "training step"), (axes[1], True, "epoch")):
        labelled = set()
        for system, seed, points in panels[peft]:
            ax.plot([p["step"] for p in points], [100 * p["score"] for p in points], color=colours[system],
                     alpha=0.8, marker=".", label=None if system in labelled else system)
            labelled.add(system)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("dev entity strict F1 (%)")
    axes[0].set_title("this package (frozen and unfrozen)", fontsize=9)
    axes[1].set_title("PEFT peers", fontsize=9)
    axes[0].set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_costs(training_json: Path) -> Dict[str, Dict[str, float]]:
    """Step time and peak training memory (above the memory after initialisation) of each
    system relative to the unfrozen one, from ``bench training``'s MiniLM runs."""
    if not training_json.is_file():
        return {}
    runs = json.loads(training_json.read_text()).get("backbones", {}).get("minilm", {}).get("runs", {})
    reference = runs.get(TRAINING_RUNS["soft"])
    if not reference:
        return {}
    costs = {}
    for system, run in TRAINING_RUNS.items():
        if run in runs:
            costs[system] = {
                "step_s": runs[run]["step_s"],
                "time_vs_soft": runs[run]["step_s"] / reference["step_s"],
                "memory_vs_soft": runs[run]["peak_above_init_mb"] / max(reference["peak_above_init_mb"], 1e-9),
            }
    return costs


def _pct(summary: Dict[str, Any]) -> str:
    if summary["mean"] is None:
        return "–"
    sd = f" ± {100 * summary['sd']:.1f}" if summary["sd"] is not None else ""
    return f"{100 * summary['mean']:.1f}{sd}"


def _interval(entry: Dict[str, Any]) -> str:
    boot = entry.get("bootstrap")
    if not boot:
        return "–"
    return f"{100 * boot['observed']:+.1f} [{100 * boot['low']:+.1f}, {100 * boot['high']:+.1f}]"


def build(folder: Path, systems: List[str], reference: str, training_json: Optional[Path] = None) -> Dict[str, Any]:
    files = {s: sorted(folder.glob(f"{s}-seed*.json")) for s in systems}
    costs = training_costs(training_json) if training_json else {}
    rows = []
    for system in systems:
        if not files[system]:
            continue
        params = _parameters(files[system])
        other = files.get(reference) or files[system]
        result = compare_files(files[system], other, names=(system, reference))
        rows.append({
            "system": system,
            "description": DESCRIPTIONS.get(system, system),
            "seeds": [f.stem.rsplit("-seed", 1)[1] for f in files[system]],
            "parameters": params,
            "training_cost": costs.get(system),
            "convergence": [run_convergence(f) for f in files[system]],
            "ents_strict": result["metrics"]["ents_strict"]["a"],
            "rels_strict": result["metrics"]["rels_strict"]["a"],
            "vs_reference": {k: result["metrics"][k]["bootstrap"] for k in ("ents_strict", "rels_strict")}
            if system != reference else None,
            "bootstrap_error": result["bootstrap_error"],
        })
    return {"reference": reference, "rows": rows}


def _count(n: Optional[int]) -> str:
    return "–" if n is None else f"{n:,}"


def markdown(table: Dict[str, Any]) -> str:
    ref = table["reference"]
    lines = [
        f"| system | seeds | converged | trainable share | trained for entities | step time vs soft | training memory vs soft "
        f"| entity strict F1 | relation strict F1 | Δ entities vs {ref} | Δ relations vs {ref} |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table["rows"]:
        params = row["parameters"] or {}
        share = f"{100 * params['trainable'] / params['total']:.2f}%" if params else "–"
        cost = row.get("training_cost") or {}
        time_ratio = f"{cost['time_vs_soft']:.2f}×" if cost else "–"
        memory_ratio = f"{cost['memory_vs_soft']:.2f}×" if cost else "–"
        vs = row["vs_reference"] or {}
        lines.append(
            f"| {row['system']} | {len(row['seeds'])} | {_converged(row.get('convergence') or [])} | {share} | {_count(params.get('entity_path'))} | {time_ratio} "
            f"| {memory_ratio} | {_pct(row['ents_strict'])} | {_pct(row['rels_strict'])} "
            f"| {_interval({'bootstrap': vs.get('ents_strict')})} | {_interval({'bootstrap': vs.get('rels_strict')})} |"
        )
    lines.append("")
    lines.append(
        "F1 in %, mean ± sample sd over seeds; Δ: paired bootstrap over the dev documents of the pooled seeds, "
        "points, 95% interval (python -m spacy_softprompt compare). PEFT peers predict no relations. "
        "Trained for entities: trainable parameters that produce the entities (prompts, adapters, concept head; "
        "a PEFT peer's every trained parameter); the rest of a pipeline's trainable share is its relation head. "
        "Step time and training memory (peak above the memory after initialisation): MiniLM, CPU, "
        "python -m spacy_softprompt bench training --backbones minilm (benchmarks/results/training.json). "
        "Converged: runs whose best dev entity strict F1 did not improve by 0.5 points or more over the last "
        "quarter of the run (steps; PEFT peers: epochs), of the seeds whose curve is stored; – where none is; "
        "best at: the step (epoch) of that best. The pipeline kept (model-best) is the one with the best combined "
        "dev score of the config (entity and relation strict F1, 0.5 each), which can be an earlier step."
    )
    return "\n".join(lines) + "\n"


README_START = "<!-- frozen-table:start (scripts/frozen_report.py --readme README.md writes this table) -->"
README_END = "<!-- frozen-table:end -->"
README_NAMES = {
    "soft": "`soft` (the main job)",
    "soft-frozen": "`soft-frozen` (P = 5)",
    "peft-prefix7": "PEFT prefix tuning, 7 virtual tokens",
    "soft-frozen-p20": "`soft-frozen` at P = 20",
    "peft-prefix22": "PEFT prefix tuning, 22 virtual tokens",
    "peft-prefix": "PEFT prefix tuning, 20 virtual tokens",
    "soft-lora": "`soft-lora` (P = 20)",
    "peft-lora": "PEFT LoRA, rank 8",
}


def readme_table(table: Dict[str, Any]) -> str:
    """The README's compact version of the table (same figures)."""
    ref = table["reference"]
    lines = [
        f"| system | backbone | seeds (converged / with a curve) | trained for entities | entity strict F1 | relation strict F1 | Δ entities vs `{ref}` [95% CI] |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table["rows"]:
        params = row["parameters"] or {}
        runs = row.get("convergence") or []
        known = [r for r in runs if r["converged"] is not None]
        converged = f"{len(row['seeds'])} ({sum(r['converged'] for r in known)}/{len(known)})" if known else f"{len(row['seeds'])} (–)"
        entity = "all" if row["system"] == "soft" else _count(params.get("entity_path"))
        vs = (row["vs_reference"] or {}).get("ents_strict")
        lines.append(
            f"| {README_NAMES.get(row['system'], row['system'])} | {'trained' if row['system'] == 'soft' else 'frozen'} "
            f"| {converged} | {entity} | {_pct(row['ents_strict'])} | {_pct(row['rels_strict'])} "
            f"| {_interval({'bootstrap': vs})} |"
        )
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, table: Dict[str, Any]) -> None:
    """Replace the table between the README's markers."""
    text = readme.read_text(encoding="utf8")
    if README_START not in text or README_END not in text:
        raise SystemExit(f"error: {readme} has no frozen-table markers ({README_START!r} ... {README_END!r})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{readme_table(table)}{README_END}{tail}", encoding="utf8")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--run-info", type=Path, help="print a trained pipeline's parameter counts as JSON and exit")
    parser.add_argument("--wall-s", type=float, default=None, help="with --run-info: the run's wall seconds")
    parser.add_argument("--systems", nargs="+", default=list(DESCRIPTIONS))
    parser.add_argument("--reference", default="soft-frozen")
    parser.add_argument("--output", type=Path, default=Path("docs/frozen_table.md"))
    parser.add_argument("--readme", type=Path, default=None, help="also rewrite the table between this file's frozen-table markers")
    parser.add_argument("--plot", type=Path, default=None,
                        help="the F1-vs-training figure (default: beside --output, <stem>_curves.png)")
    parser.add_argument("--training", type=Path, default=Path("benchmarks/results/training.json"),
                        help="bench training's results, for step time and memory relative to soft")
    args = parser.parse_args(argv)
    if args.run_info is not None:
        print(json.dumps({"model": str(args.run_info), "parameters": pipeline_parameters(args.run_info), "wall_s": args.wall_s}))
        return 0
    if args.folder is None:
        parser.error("give the metrics folder (or --run-info MODEL_DIR)")
    systems = [s for item in args.systems for s in item.split()]
    table = build(args.folder, systems, args.reference, args.training)
    text = markdown(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf8")
    args.output.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf8")
    if args.readme is not None:
        write_readme(args.readme, table)
    figure = plot_curves(args.folder, systems, args.plot or args.output.with_name(f"{args.output.stem}_curves.png"))
    if figure is not None:
        with args.output.open("a", encoding="utf8") as out:
            out.write(f"\n![dev entity strict F1 during training, every stored run]({figure.name})\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
