"""Output records of the sharded job and the files that hold them.

Every input note gets exactly one record::

    {"id": ..., "status": "ok", "error": null, "text": ..., "entities": [...], "relations": [...]}
    {"id": ..., "status": "failed", "error": "ValueError: ...", "text": null, "entities": [], "relations": []}

``entities`` and ``relations`` are those of the local engine's JSONL
(:func:`spacy_softprompt.annotate.doc_to_record`). A shard's records go to
``output/<shard>.jsonl`` or ``.parquet``, written under a temporary name and
renamed, so an output file exists only when complete. In Parquet, ``entities``
and ``relations`` are JSON strings: a fixed schema for every shard (inferred
nested structs would differ between shards whose entities carry different
context attributes, and Spark or Ray could not read the folder as one table).
"""
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

from spacy.tokens import Doc

from ..annotate import doc_to_record

OK, FAILED = "ok", "failed"
FIELDS = ("id", "status", "error", "text", "entities", "relations")
_MAX_ERROR = 160


def ok_record(doc_id: str, doc: Doc) -> Dict[str, Any]:
    record = doc_to_record(doc_id, doc)
    return {"id": doc_id, "status": OK, "error": None, "text": record["text"],
            "entities": record["entities"], "relations": record["relations"]}


def failed_record(doc_id: str, error: str) -> Dict[str, Any]:
    return {"id": doc_id, "status": FAILED, "error": error, "text": None, "entities": [], "relations": []}


def safe_error(err: BaseException, text: Optional[str]) -> str:
    """``Type: message`` with every word of the message that occurs in the note
    replaced by ``[note text]``, cut to a short length: the note never leaks."""
    message = str(err)
    if text:
        lowered = text.lower()

        def scrub(match: "re.Match[str]") -> str:
            word = match.group(0)
            return "[note text]" if len(word) >= 3 and word.lower() in lowered else word

        message = re.sub(r"\w+", scrub, message)
    if len(message) > _MAX_ERROR:
        message = message[:_MAX_ERROR] + "..."
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


# ---- shard files --------------------------------------------------------------------
def write_records(path: Path, records: List[Dict[str, Any]], output_format: str) -> None:
    """All records of a shard to ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    if output_format == "jsonl":
        with tmp.open("w", encoding="utf8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    elif output_format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {name: [r[name] for r in records] for name in FIELDS}
        columns["entities"] = [json.dumps(v, ensure_ascii=False) for v in columns["entities"]]
        columns["relations"] = [json.dumps(v, ensure_ascii=False) for v in columns["relations"]]
        schema = pa.schema([(name, pa.string()) for name in FIELDS])
        pq.write_table(pa.table(columns, schema=schema), tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
    else:
        raise ValueError(f"Unknown output format '{output_format}': use 'jsonl' or 'parquet'.")
    os.replace(tmp, path)


def read_records(path: Path) -> Iterator[Dict[str, Any]]:
    """The records of an output shard (JSONL or Parquet), as written."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for row in pq.read_table(path).to_pylist():
            row["entities"] = json.loads(row["entities"])
            row["relations"] = json.loads(row["relations"])
            yield row
        return
    with path.open(encoding="utf8") as f:
        for line in f:
            yield json.loads(line)


def remove_partial_files(folder: Path) -> int:
    """Delete temporary files left by killed writers; return how many."""
    removed = 0
    for tmp in Path(folder).rglob(".*.partial"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


# ---- brat ---------------------------------------------------------------------------
def write_brat(folder: Path, doc_id: str, doc: Doc) -> None:
    """``doc_id.txt`` and ``doc_id.ann`` under ``folder``, each atomically (rewriting
    a note on a redone shard gives the same bytes)."""
    from ..data.brat import write_ann
    from ..data.docs import doc_to_brat

    base = Path(folder) / doc_id
    base.parent.mkdir(parents=True, exist_ok=True)
    _atomic_text(base.with_name(base.name + ".txt"), doc.text)
    _atomic_text(base.with_name(base.name + ".ann"), write_ann(doc_to_brat(doc, doc_id)))


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tmp.open("w", encoding="utf8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def ids_of(records: Iterable[Dict[str, Any]]) -> List[str]:
    return [r["id"] for r in records]
