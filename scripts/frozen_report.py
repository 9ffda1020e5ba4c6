"""The frozen-backbone table from scripts/frozen_table.sh's metrics files.

usage: python scripts/frozen_report.py benchmarks/results/frozen [--systems "soft-frozen soft-lora ..."]
       [--reference soft-frozen] [--output docs/frozen_table.md]
       python scripts/frozen_report.py --run-info MODEL_DIR [--wall-s S]   (prints a run's parameters as JSON)

Per system (``<system>-seed<S>.json`` files, evaluate's or a baseline's metrics with
per-document counts): seeds, trainable share of the parameters, entity / relation
strict F1 as mean ± sample sd, and the paired bootstrap 95% interval of each system
minus the reference (``compare``), in points. Writes the markdown table and a JSON
beside it (same stem), and prints the table.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from spacy_softprompt.compare import compare_files

DESCRIPTIONS = {
    "soft": "soft prompts, backbone unfrozen (the main job, 600 steps)",
    "soft-frozen": "soft prompts (deep, P=20), frozen backbone",
    "soft-lora": "soft prompts (deep, P=20) + LoRA r=8, frozen backbone",
    "peft-prefix": "PEFT prefix tuning (20 virtual tokens), frozen backbone",
    "peft-lora": "PEFT LoRA r=8, frozen backbone",
}


def pipeline_parameters(model_dir: Path) -> Dict[str, int]:
    """Trainable and total parameters of a trained pipeline: the encoder's parameters
    that require a gradient plus every head parameter, of the encoder's plus the heads'."""
    import spacy

    nlp = spacy.load(model_dir)
    encoder = nlp.get_pipe("transformer").model.encoder
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in encoder.parameters())
    for name, pipe in nlp.pipeline:
        if name == "transformer" or not hasattr(pipe, "model"):
            continue
        for node in pipe.model.walk():
            if node.name.startswith("transformer-listener"):
                continue
            for param in node.param_names:
                if node.has_param(param):
                    size = int(node.get_param(param).size)
                    trainable += size
                    total += size
    return {"trainable": trainable, "total": total}


def _parameters(seed_file: Path) -> Optional[Dict[str, int]]:
    """Trainable / total parameters from the run's ``runs/<stem>.json`` (written by
    ``--run-info`` for our pipelines, the baseline's own report for the PEFT peers)."""
    info = seed_file.parent / "runs" / seed_file.name
    if not info.is_file():
        return None
    params = json.loads(info.read_text())["parameters"]
    return {"trainable": int(params["trainable"]), "total": int(params["total"])}


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


def build(folder: Path, systems: List[str], reference: str) -> Dict[str, Any]:
    files = {s: sorted(folder.glob(f"{s}-seed*.json")) for s in systems}
    rows = []
    for system in systems:
        if not files[system]:
            continue
        params = _parameters(files[system][0])
        other = files.get(reference) or files[system]
        result = compare_files(files[system], other, names=(system, reference))
        rows.append({
            "system": system,
            "description": DESCRIPTIONS.get(system, system),
            "seeds": [f.stem.rsplit("-seed", 1)[1] for f in files[system]],
            "parameters": params,
            "ents_strict": result["metrics"]["ents_strict"]["a"],
            "rels_strict": result["metrics"]["rels_strict"]["a"],
            "vs_reference": {k: result["metrics"][k]["bootstrap"] for k in ("ents_strict", "rels_strict")}
            if system != reference else None,
            "bootstrap_error": result["bootstrap_error"],
        })
    return {"reference": reference, "rows": rows}


def markdown(table: Dict[str, Any]) -> str:
    ref = table["reference"]
    lines = [
        f"| system | seeds | trainable share | entity strict F1 | relation strict F1 | Δ entities vs {ref} | Δ relations vs {ref} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in table["rows"]:
        params = row["parameters"]
        share = f"{100 * params['trainable'] / params['total']:.2f}%" if params else "–"
        vs = row["vs_reference"] or {}
        lines.append(
            f"| {row['system']} | {len(row['seeds'])} | {share} | {_pct(row['ents_strict'])} | {_pct(row['rels_strict'])} "
            f"| {_interval({'bootstrap': vs.get('ents_strict')})} | {_interval({'bootstrap': vs.get('rels_strict')})} |"
        )
    lines.append("")
    lines.append(
        "F1 in %, mean ± sample sd over seeds; Δ: paired bootstrap over the dev documents of the pooled seeds, "
        "points, 95% interval (python -m spacy_softprompt compare). PEFT peers predict no relations."
    )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--run-info", type=Path, help="print a trained pipeline's parameter counts as JSON and exit")
    parser.add_argument("--wall-s", type=float, default=None, help="with --run-info: the run's wall seconds")
    parser.add_argument("--systems", nargs="+", default=list(DESCRIPTIONS))
    parser.add_argument("--reference", default="soft-frozen")
    parser.add_argument("--output", type=Path, default=Path("docs/frozen_table.md"))
    args = parser.parse_args(argv)
    if args.run_info is not None:
        print(json.dumps({"model": str(args.run_info), "parameters": pipeline_parameters(args.run_info), "wall_s": args.wall_s}))
        return 0
    if args.folder is None:
        parser.error("give the metrics folder (or --run-info MODEL_DIR)")
    systems = [s for item in args.systems for s in item.split()]
    table = build(args.folder, systems, args.reference)
    text = markdown(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf8")
    args.output.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
