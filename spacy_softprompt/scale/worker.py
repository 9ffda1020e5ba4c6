"""Annotate one shard: the unit of work, with no knowledge of Ray.

:func:`annotate_shard` reads an input shard, runs ``nlp.pipe`` and writes one
record per note (``ok``, or ``failed`` with the error type and a message
scrubbed of note text) to the output shard through a temporary name and an
atomic rename. An output that exists is complete, so a rerun skips it, and a
redone shard replaces, never appends. Ray actors, Spark ``mapInPandas`` or a
plain loop call it the same way.
"""
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from .outputs import FAILED, failed_record, ok_record, read_records, safe_error, write_brat, write_records
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
) -> ShardResult:
    """Annotate the notes of ``shard_in`` into ``shard_out`` (format from its
    suffix unless given); skip when ``shard_out`` already exists. With
    ``brat_dir``, also write each ok note's ``.txt``/``.ann`` there."""
    start, cpu = time.perf_counter(), time.process_time()
    shard_in, shard_out = Path(shard_in), Path(shard_out)
    output_format = output_format or shard_out.suffix.lstrip(".")
    name = shard_in.stem
    if shard_out.is_file():
        statuses = [r["status"] for r in read_records(shard_out)]
        failed = statuses.count(FAILED)
        return ShardResult(name, len(statuses), len(statuses) - failed, failed, True,
                           time.perf_counter() - start, time.process_time() - cpu)
    notes = list(read_shard(shard_in))
    records: List[Dict[str, Any]] = []
    readable = [(n["id"], n["text"]) for n in notes if n.get("error") is None]
    done: Dict[str, Tuple[Optional[Doc], Optional[str]]] = dict(
        (doc_id, (doc, error)) for doc_id, doc, error in pipe_isolating(nlp, readable, batch_size)
    )
    for note in notes:
        doc_id = note["id"]
        if note.get("error") is not None:
            records.append(failed_record(doc_id, note["error"]))
            continue
        doc, error = done[doc_id]
        if doc is None:
            records.append(failed_record(doc_id, error or "unknown error"))
            continue
        records.append(ok_record(doc_id, doc))
        if brat_dir is not None:
            write_brat(Path(brat_dir), doc_id, doc)
    write_records(shard_out, records, output_format)
    failed = sum(r["status"] == FAILED for r in records)
    return ShardResult(name, len(records), len(records) - failed, failed, False,
                       time.perf_counter() - start, time.process_time() - cpu)


def pipe_isolating(
    nlp: Language, notes: List[Tuple[str, str]], batch_size: int
) -> Iterator[Tuple[str, Optional[Doc], Optional[str]]]:
    """``(id, doc, None)`` or ``(id, None, error)`` per note: batches of
    ``batch_size`` through ``nlp.pipe``; a batch that raises is redone note by
    note, so only the bad note fails."""
    for start in range(0, len(notes), batch_size):
        chunk = notes[start : start + batch_size]
        try:
            docs = list(nlp.pipe((text for _, text in chunk), batch_size=batch_size))
        except Exception:  # noqa: BLE001 - isolated below
            logger.warning("a batch of %d notes failed; redoing them one by one", len(chunk))
        else:
            for (doc_id, _), doc in zip(chunk, docs):
                yield doc_id, doc, None
            continue
        for doc_id, text in chunk:
            try:
                yield doc_id, nlp(text), None
            except Exception as err:  # noqa: BLE001 - recorded, the shard goes on
                yield doc_id, None, safe_error(err, text)
