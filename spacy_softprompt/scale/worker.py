"""Annotate one shard: the unit of work, with no knowledge of Ray.

:func:`annotate_shard` reads an input shard, runs ``nlp.pipe`` and writes one
record per note (``ok``, or ``failed`` with the error type and a message
scrubbed of note text) to the output shard through a temporary name and an
atomic rename. An output that exists is complete, so a rerun skips it, and a
redone shard replaces, never appends. Ray actors, Spark ``mapInPandas`` or a
plain loop call it the same way.
"""
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from ..annotate import pipe_isolating, safe_error
from ..data.schema import Schema
from ..safe_io import FileNames, OutputCorruptError
from .outputs import FAILED, failed_record, ok_record, read_records, write_brat, write_records
from .shards import read_shard

logger = logging.getLogger(__name__)


@dataclass
class ShardResult:
    shard: str
    notes: int
    ok: int
    failed: int
    skipped: bool
    seconds: float
    cpu_seconds: float  # CPU time of the worker process on this shard (all its threads)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def annotate_shard(
    nlp: Language,
    shard_in: Path,
    shard_out: Path,
    *,
    output_format: Optional[str] = None,
    batch_size: int = 64,
    brat_dir: Optional[Path] = None,
    brat_names: Optional[Mapping[str, str]] = None,
    brat_schema: Optional[Schema] = None,
    overlap: bool = False,
) -> ShardResult:
    """Annotate the notes of ``shard_in`` into ``shard_out`` (format from its
    suffix unless given); skip when ``shard_out`` already exists. With
    ``brat_dir``, also write each ok note's ``.txt``/``.ann`` there, named by
    ``brat_names`` (the ids whose file name is not the id itself, as
    :func:`brat_names_for` gives them; None: assigned here through
    :class:`~spacy_softprompt.safe_io.FileNames`, for a single-process caller), in
    ``brat_schema``'s source form when given.
    A note that cannot be written fails alone. ``overlap``: the transformer of the next
    batch runs in a background thread while the heads work on this one (same output)."""
    start, cpu = time.perf_counter(), time.process_time()
    shard_in, shard_out = Path(shard_in), Path(shard_out)
    output_format = output_format or shard_out.suffix.lstrip(".")
    name = shard_in.stem
    if shard_out.is_file():
        try:
            statuses = [r["status"] for r in read_records(shard_out)]
        except OutputCorruptError as err:  # set aside and redone
            logger.warning("%s; redoing the shard", err)
            os.replace(shard_out, shard_out.with_name(shard_out.name + ".invalid"))
        else:
            failed = statuses.count(FAILED)
            return ShardResult(name, len(statuses), len(statuses) - failed, failed, True,
                               time.perf_counter() - start, time.process_time() - cpu)
    notes = list(read_shard(shard_in))
    records: List[Dict[str, Any]] = []
    readable = [(n["id"], n["text"]) for n in notes if n.get("error") is None]
    done: Dict[str, Tuple[Optional[Doc], Optional[str]]] = dict(
        (doc_id, (doc, error)) for doc_id, doc, error in pipe_isolating(nlp, readable, batch_size, overlap=overlap)
    )
    if brat_dir is not None and brat_names is None:
        brat_names = FileNames(brat_dir).assign([doc_id for doc_id, _ in readable])
    for note in notes:
        doc_id = note["id"]
        if note.get("error") is not None:
            records.append(failed_record(doc_id, note["error"]))
            continue
        doc, error = done[doc_id]
        if doc is None:
            records.append(failed_record(doc_id, error or "unknown error"))
            continue
        try:
            record = ok_record(doc_id, doc)
            json.dumps(record, ensure_ascii=False).encode("utf8")  # a lone surrogate fails this note, not the shard
            if brat_dir is not None:
                write_brat(Path(brat_dir), brat_names.get(doc_id, doc_id), doc_id, doc, brat_schema)
        except Exception as err:  # noqa: BLE001 - this note fails, the shard goes on
            records.append(failed_record(doc_id, f"could not write: {safe_error(err, note.get('text'))}"))
            continue
        records.append(record)
    write_records(shard_out, records, output_format)
    failed = sum(r["status"] == FAILED for r in records)
    return ShardResult(name, len(records), len(records) - failed, failed, False,
                       time.perf_counter() - start, time.process_time() - cpu)


def brat_names_for(notes: Iterable[str], brat_dir: Path) -> Dict[str, str]:
    """Give every note id its brat file name (recorded in ``brat_dir/doc_ids.jsonl``);
    the driver calls this once, then hands each worker only the names that
    differ from the ids."""
    names = FileNames(brat_dir).assign(notes)
    return {doc_id: name for doc_id, name in names.items() if name != doc_id}
