"""How well gold entity edges fall on token boundaries, per shared corpus folder.

For every entity (keep-everything mode, no schema): on token edges with spaCy's
English tokenizer alone (for comparison), with the clinical tokenizer alone,
after splitting tokens at gold boundaries, or still unalignable (and why). Prints a markdown table; ``--output FILE`` also writes
the numbers and the residue as JSON.

    python scripts/alignment_report.py [--corpora ../shared/corpora] [--output alignment.json]
"""
import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

import spacy

from spacy_softprompt.data.brat import read_brat_dir
from spacy_softprompt.data.docs import brat_to_doc
from spacy_softprompt.data.errors import IssueCollector
from spacy_softprompt.data.readers import blank_clinical_nlp
from spacy_softprompt.data.stats import ConversionStats

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPORA = Path(os.environ.get("SPACY_SOFTPROMPT_CORPORA", REPO.parent / "shared" / "corpora"))

FOLDERS = [
    "maccrobat2020/train",
    "maccrobat2020/dev",
    "ddi2013/train/drugbank",
    "ddi2013/train/medline",
    "ddi2013/test/drugbank",
    "fda_ars",
    "chia/sample",
]


def measure(folder: Path, nlp: Any, baseline: Any) -> Dict[str, Any]:
    """Alignment counts and the unalignable residue of one brat folder (``baseline``:
    a pipeline whose tokenizer alone is measured for comparison)."""
    stats = ConversionStats()
    base = ConversionStats()
    collector = IssueCollector(log=False)
    for brat_doc in read_brat_dir(folder, recursive=True, collector=IssueCollector(log=False)):
        brat_to_doc(nlp, brat_doc, collector=collector, stats=stats)
        brat_to_doc(baseline, brat_doc, split_gold_boundaries=False, collector=IssueCollector(log=False), stats=base)
    residue = [i for i in collector.issues if i.kind == "alignment"]
    return {
        "documents": stats.documents,
        "entities": stats.entities,
        "baseline_rate": base.tokenizer_rate,
        "aligned_tokenizer": stats.aligned_tokenizer,
        "aligned_split": stats.aligned_split,
        "unalignable": stats.unalignable,
        "tokenizer_rate": stats.tokenizer_rate,
        "aligned_rate": stats.aligned_rate,
        "residue_reasons": dict(Counter(i.message.split(": ", 1)[1].split(" (")[0] for i in residue)),
        "residue": [i.to_dict() for i in residue],
    }


def markdown(rows: Dict[str, Dict[str, Any]]) -> str:
    lines = [
        "| corpus | docs | entities | spaCy English tokenizer | clinical tokenizer | + gold-boundary splitting | unalignable |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['documents']} | {r['entities']} | {r['baseline_rate']:.2%} | {r['tokenizer_rate']:.2%} | "
            f"{r['aligned_rate']:.2%} | {r['unalignable']} |"
        )
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA, help="the shared corpora folder")
    parser.add_argument("--output", type=Path, default=None, help="also write JSON here")
    args = parser.parse_args(argv)
    if not args.corpora.is_dir():
        print(f"corpora folder not found: {args.corpora}", file=sys.stderr)
        return 2
    nlp = blank_clinical_nlp()
    baseline = spacy.blank("en")
    rows = {name: measure(args.corpora / name, nlp, baseline) for name in FOLDERS if (args.corpora / name).is_dir()}
    print(markdown(rows))
    for name, r in rows.items():
        if r["residue_reasons"]:
            print(f"{name}: unalignable: {r['residue_reasons']}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
