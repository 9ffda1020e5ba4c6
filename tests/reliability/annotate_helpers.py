"""Helpers of the annotate reliability tests: a fast pipeline (blank English, an
entity ruler, optional per-note delay or failure), hostile note ids, and a
snapshot of every file under a folder to prove nothing was written outside OUT.

(Imported by name: tests folders are not packages here.)
"""
import json
import os
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

import spacy
from spacy.language import Language

DRUGS = ("aspirin", "heparin", "warfarin")

#: ids a hostile input may carry: traversal, absolute, empty, over-long, NUL,
#: reserved, dot names, case twins, separators, non-ASCII, a lone surrogate
HOSTILE_IDS = [
    "../../x",
    "../escape",
    "sub/../../y",
    "",
    " ",
    ".",
    "..",
    "...",
    "a" * 300,
    "nul\x00id",
    "CON",
    "con.txt",
    "LPT1",
    "Note1",
    "note1",
    "NOTE1",
    "sub/ok",
    "sub/",
    "/",
    "a//b",
    "x\\..\\..\\win",
    "~",
    "-rf",
    ".hidden",
    "tab\tnew\nline",
    "é-note",
    "emoji-\U0001f600",
    "\ud800lone",
    "doc_ids",
    "annotate_errors",
    ".annotate.lock",
    "ok-plain_1.v2",
]


@Language.component("reliability_slow")
def slow(doc):
    """A little work per note, so that a kill lands in the middle of a run."""
    time.sleep(float(os.environ.get("RELIABILITY_SLOW_SECONDS", "0.004")))
    return doc


@Language.component("reliability_boom")
def boom(doc):
    if "BOOM" in doc.text:
        raise ValueError(f"cannot process {doc.text[:30]}")
    return doc


def make_nlp(*extra: str, max_length: Optional[int] = None) -> Language:
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "Drug", "pattern": [{"LOWER": d}]} for d in DRUGS])
    for name in extra:
        nlp.add_pipe(name)
    if max_length is not None:
        nlp.max_length = max_length
    return nlp


def note_text(i: int, words: int = 6) -> str:
    return f"Note {i}: started {DRUGS[i % 3]} daily " + " ".join(f"w{i}x{j}" for j in range(words))


def write_jsonl(path: Path, notes: Dict[str, str]) -> Path:
    with path.open("w", encoding="utf8") as f:
        for doc_id, text in notes.items():
            f.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return path


def snapshot(root: Path, skip: Iterable[Path] = ()) -> Dict[str, int]:
    """Every file under ``root`` (outside the ``skip`` folders) with its size."""
    skipped = [Path(s).resolve() for s in skip]
    files = {}
    for dirpath, _, filenames in os.walk(root):
        here = Path(dirpath).resolve()
        if any(here == s or s in here.parents for s in skipped):
            continue
        for name in filenames:
            path = Path(dirpath) / name
            files[str(path.relative_to(root))] = path.lstat().st_size
    return files


def read_jsonl(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines()]


def brat_map(out: Path) -> Dict[str, str]:
    """id -> file name from OUT/doc_ids.jsonl."""
    return {e["id"]: e["file"] for e in read_jsonl(out / "doc_ids.jsonl")}


def done_brat_ids(out: Path) -> Set[str]:
    return {doc_id for doc_id, name in brat_map(out).items() if (out / (name + ".ann")).is_file()}
