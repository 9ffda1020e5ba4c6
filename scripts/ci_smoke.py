"""Smoke test of an installed spacy-softprompt (run by CI in a venv with no extras).

usage: python scripts/ci_smoke.py WORK_DIR

Checks, from WORK_DIR (never the checkout, so the installed package is used):
the CLI's ``--help``, ``spacy.blank("en")``, ``convert`` and ``score`` on a tiny
brat folder, and a tiny pipeline (soft_cpu.cfg: deep prompts over a random
2-layer BERT, initialised and trained a few steps on the toy docs) saved to
WORK_DIR/pipeline and loaded by ``spacy.load`` in a fresh process.
"""
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
TEXT = "aspirin 10 mg daily for fever\n"
ANN = "T1\tDrug 0 7\taspirin\nT2\tStrength 8 13\t10 mg\nT3\tFrequency 14 19\tdaily\nR1\tStrength-Drug Arg1:T2 Arg2:T1\n"


def run(args: List[str], cwd: Path) -> str:
    """Run ``python -m ...`` in ``cwd``; fail with its output unless it exits 0."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"FAILED: python {' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def check_installed_not_checkout() -> None:
    import spacy_softprompt

    location = Path(spacy_softprompt.__file__).resolve()
    assert REPO not in location.parents, f"spacy_softprompt imported from the checkout: {location}"


def check_cli(work: Path) -> None:
    out = run(["-m", "spacy_softprompt", "--help"], work)
    for command in ("convert", "score", "evaluate", "annotate"):
        assert command in out, f"--help does not list {command}:\n{out}"
    out = run(["-m", "spacy", "--help"], work)
    assert "package" in out, out


def check_blank() -> None:
    import spacy

    doc = spacy.blank("en")("aspirin 10 mg")
    assert [t.text for t in doc] == ["aspirin", "10", "mg"]


def check_convert_and_score(work: Path) -> None:
    from spacy.tokens import DocBin

    import spacy_softprompt.annotations  # noqa: F401  (registers doc._.relations)

    gold = work / "brat"
    gold.mkdir(parents=True, exist_ok=True)
    (gold / "note.txt").write_text(TEXT, encoding="utf8")
    (gold / "note.ann").write_text(ANN, encoding="utf8")
    run(["-m", "spacy_softprompt", "convert", str(gold), str(work / "note.spacy")], work)
    import spacy

    docs = list(DocBin().from_disk(work / "note.spacy").get_docs(spacy.blank("en").vocab))
    assert len(docs) == 1 and len(docs[0].spans["entities"]) == 3, docs
    assert len(docs[0]._.relations) == 1, docs[0]._.relations
    run(["-m", "spacy_softprompt", "score", str(gold), str(gold), "--output", str(work / "score.json")], work)
    metrics = json.loads((work / "score.json").read_text(encoding="utf8"))
    assert metrics["ents_strict_f"] == 1.0 and metrics["rels_strict_f"] == 1.0, metrics


def build_tiny_pipeline(work: Path) -> Path:
    """soft_cpu.cfg over a random 2-layer BERT, initialised and trained 3 steps on the toy docs, saved."""
    import spacy
    from spacy.training import Example

    from spacy_softprompt.testing import make_random_encoder, toy_docs

    backbone = make_random_encoder(work / "tiny_bert", "bert")
    config = spacy.util.load_config(
        REPO / "configs" / "soft_cpu.cfg",
        overrides={
            "paths.backbone": str(backbone),
            "components.transformer.model.get_spans.window": 24,
            "components.transformer.model.get_spans.stride": 16,
        },
        interpolate=True,
    )
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs()]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        losses = nlp.update(examples, sgd=optimizer, losses={})
    assert losses and all(math.isfinite(float(loss)) for loss in losses.values()), losses  # trained: finite losses
    path = work / "pipeline"
    nlp.to_disk(path)
    return path


def check_load(work: Path, pipeline: Path) -> None:
    code = (
        "import json, spacy; nlp = spacy.load({p!r}); doc = nlp('aspirin 10 mg daily');"
        "print(json.dumps({{'pipes': nlp.pipe_names, 'rels': isinstance(doc._.relations, list)}}))"
    ).format(p=str(pipeline))
    info = json.loads(run(["-c", code], work).strip().splitlines()[-1])
    assert info == {"pipes": ["transformer", "ner", "relation_extractor"], "rels": True}, info


def main() -> None:
    work = Path(sys.argv[1]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    check_installed_not_checkout()
    check_cli(work)
    check_blank()
    check_convert_and_score(work)
    pipeline = build_tiny_pipeline(work)
    check_load(work, pipeline)
    print(f"smoke: --help, spacy.blank, convert, score and spacy.load({pipeline}) passed")


if __name__ == "__main__":
    main()
