"""Output records of the sharded job and the files that hold them.

Every input note gets exactly one record::

    {"id": ..., "status": "ok", "error": null, "text": ..., "entities": [...], "relations": [...]}
    {"id": ..., "status": "failed", "error": "ValueError: ...", "text": null, "entities": [], "relations": []}

``entities`` and ``relations`` are those of the local engine's JSONL
(:func:`spacy_softprompt.annotate.doc_to_record`). A shard's records go to
``output/<shard>.jsonl`` or ``.parquet``, written under a temporary name and
renamed, so an output file exists only when complete. Error messages are
:func:`spacy_softprompt.annotate.safe_error` lines (no word of the note). In Parquet, ``entities``
and ``relations`` are JSON strings: a fixed schema for every shard (inferred
nested structs would differ between shards whose entities carry different
context attributes, and Spark or Ray could not read the folder as one table).
"""
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from spacy.tokens import Doc

from ..annotate import doc_to_record, write_brat_files
from ..data.schema import Schema
from ..safe_io import OutputCorruptError, atomic_path

OK, FAILED = "ok", "failed"
FIELDS = ("id", "status", "error", "text", "entities", "relations")


def ok_record(doc_id: str, doc: Doc) -> Dict[str, Any]:
    record = doc_to_record(doc_id, doc)
    return {"id": doc_id, "status": OK, "error": None, "text": record["text"],
            "entities": record["entities"], "relations": record["relations"]}


def failed_record(doc_id: str, error: str) -> Dict[str, Any]:
    return {"id": doc_id, "status": FAILED, "error": error, "text": None, "entities": [], "relations": []}


# ---- shard files --------------------------------------------------------------------
def write_records(path: Path, records: List[Dict[str, Any]], output_format: str) -> None:
    """All records of a shard to ``path``, atomically (:func:`~spacy_softprompt.safe_io.atomic_path`)."""
    if output_format not in ("jsonl", "parquet"):
        raise ValueError(f"Unknown output format '{output_format}': use 'jsonl' or 'parquet'.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if output_format == "jsonl":
            tmp.write_bytes(b"".join(_jsonl_line(r) for r in records))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = {name: [valid_unicode(r[name]) for r in records] for name in FIELDS}
            columns["entities"] = [json.dumps(v, ensure_ascii=False) for v in columns["entities"]]
            columns["relations"] = [json.dumps(v, ensure_ascii=False) for v in columns["relations"]]
            schema = pa.schema([(name, pa.string()) for name in FIELDS])
            pq.write_table(pa.table(columns, schema=schema), tmp)


def _jsonl_line(record: Dict[str, Any]) -> bytes:
    """A record as UTF-8 JSON; one holding a lone surrogate (an id that is not valid
    Unicode) is written with ``\\u`` escapes instead of failing the shard."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")


def valid_unicode(value: Any) -> Any:
    """Parquet strings must be valid Unicode: a lone surrogate becomes '?'."""
    if isinstance(value, str):
        return value.encode("utf8", "replace").decode("utf8") if not value.isascii() else value
    return value


def read_records(path: Path) -> Iterator[Dict[str, Any]]:
    """The records of an output shard (JSONL or Parquet), as written;
    :class:`~spacy_softprompt.safe_io.OutputCorruptError` names the file (and line) it cannot read."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
            for row in rows:
                row["entities"] = json.loads(row["entities"])
                row["relations"] = json.loads(row["relations"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise OutputCorruptError(f"{path}: not a readable output shard ({type(err).__name__})") from None
        yield from rows
        return
    with path.open("rb") as f:
        for line_no, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "id" not in record or "status" not in record:
                    raise ValueError("not a record")
            except ValueError as err:
                raise OutputCorruptError(f"{path}:{line_no}: not an output record ({type(err).__name__})") from None
            yield record


# ---- brat ---------------------------------------------------------------------------
def write_brat(folder: Path, name: str, doc_id: str, doc: Doc, schema: Optional[Schema] = None) -> None:
    """``name.txt`` and ``name.ann`` under ``folder`` (see
    :func:`spacy_softprompt.annotate.write_brat_files`; ``schema``: in its source
    form); rewriting a note of a redone shard gives the same bytes."""
    write_brat_files(Path(folder), name, doc_id, doc, schema)
