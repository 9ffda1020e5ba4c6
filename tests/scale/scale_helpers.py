"""Helpers of the scale tests: synthetic notes and a tiny pipeline saved to disk
(a uniquely named module: ``conftest`` is ambiguous across test folders)."""
import json
from pathlib import Path
from typing import Dict, Optional

COMPONENTS = Path(__file__).with_name("scale_components.py")
DRUGS = ["aspirin", "heparin", "warfarin", "insulin"]


def load_components() -> None:
    """Register the test components in this process (once)."""
    from spacy.language import Language
    from spacy.util import import_file

    if not Language.has_factory("test_scale_relations"):
        import_file("scale_components", str(COMPONENTS))


def synthetic_notes(n: int) -> Dict[str, str]:
    """``n`` short notes with a drug and a strength each (``note-0000`` ...)."""
    notes = {}
    for i in range(n):
        drug = DRUGS[i % len(DRUGS)]
        notes[f"note-{i:04d}"] = f"Seen on day {i}. Started {drug} {5 + i % 20} mg daily; no rash.\nPlan: continue {drug}."
    return notes


def save_pipeline(path: Path, kill_flag: Optional[Path] = None, once: bool = True) -> Path:
    import spacy

    load_components()
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "Drug", "pattern": [{"LOWER": d}]} for d in DRUGS])
    ruler.add_patterns([{"label": "Strength", "pattern": [{"LIKE_NUM": True}, {"LOWER": "mg"}]}])
    nlp.add_pipe("test_scale_relations")
    nlp.add_pipe("test_scale_explode")
    if kill_flag is not None:
        nlp.add_pipe("test_scale_kill", config={"flag": str(kill_flag), "once": once})
    nlp.to_disk(path)
    return path


def write_jsonl(path: Path, notes: Dict[str, str]) -> Path:
    with path.open("w", encoding="utf8") as f:
        for doc_id, text in notes.items():
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return path
