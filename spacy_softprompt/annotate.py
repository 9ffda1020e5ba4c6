"""Annotate a folder of notes (or a JSONL file) with a trained pipeline.

Resumable and lossless:
* a document whose output already exists is skipped, so a killed run restarts
  where it stopped; brat files are written to a temporary name and renamed, and
  a JSONL line cut off by a kill is dropped on restart, so each document ends up
  written exactly once;
* a document that cannot be read or processed is reported (id + error type,
  never its text) in ``annotate_errors.jsonl`` beside the output, and the others
  go on.
"""
import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from .annotations import get_entities, get_relations
from .parallel import Result, WorkerPool, available_cores

logger = logging.getLogger(__name__)

ERRORS_FILE = "annotate_errors.jsonl"
CONTEXT_ATTRIBUTES = ("is_negated", "is_historical", "is_hypothetical", "is_family", "is_uncertain", "section_category")


@dataclass
class AnnotateReport:
    written: int = 0
    skipped_existing: int = 0
    failed: List[Dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"written": self.written, "skipped_existing": self.skipped_existing, "failed": self.failed}


# ---- inputs ---------------------------------------------------------------------
def iter_inputs(source: Path) -> Iterator[Tuple[str, Optional[str], Optional[str]]]:
    """Yield ``(doc_id, text, error)`` from a folder of ``.txt`` files or a ``.jsonl``
    file of ``{"id": ..., "text": ...}`` records; unreadable items carry an error."""
    source = Path(source)
    if source.is_dir():
        for path in sorted(source.rglob("*.txt")):
            doc_id = str(path.relative_to(source).with_suffix(""))
            try:
                with path.open(encoding="utf8", newline="") as f:
                    yield doc_id, f.read(), None
            except (UnicodeDecodeError, OSError) as err:
                yield doc_id, None, f"{type(err).__name__}: {_short(err)}"
    elif source.suffix == ".jsonl":
        with source.open(encoding="utf8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    doc_id, text = str(record["id"]), record["text"]
                    if not isinstance(text, str):
                        raise TypeError("'text' is not a string")
                    yield doc_id, text, None
                except (ValueError, KeyError, TypeError) as err:
                    yield f"{source.name}:{line_no}", None, f"line {line_no}: {type(err).__name__}: {_short(err)}"
    else:
        raise ValueError(f"{source}: expected a folder of .txt files or a .jsonl file")


def _short(err: Exception, limit: int = 120) -> str:
    message = str(err)
    return message if len(message) <= limit else message[:limit] + "..."


# ---- outputs --------------------------------------------------------------------
def doc_to_record(doc_id: str, doc: Doc) -> Dict[str, Any]:
    """A JSON-ready record: entities with context attributes, relations."""
    entities = []
    for span in get_entities(doc):
        entity = {"start": span.start_char, "end": span.end_char, "label": span.label_, "text": span.text}
        for attr in CONTEXT_ATTRIBUTES:
            if span.has_extension(attr) and getattr(span._, attr) is not None:
                entity[attr] = getattr(span._, attr)
        entities.append(entity)
    return {"id": doc_id, "text": doc.text, "entities": entities, "relations": get_relations(doc)}


class _BratSink:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)

    def done(self) -> Set[str]:
        return {str(p.relative_to(self.out_dir).with_suffix("")) for p in self.out_dir.rglob("*.ann")}

    def write(self, doc_id: str, doc: Doc) -> None:
        from .data.brat import write_ann
        from .data.docs import doc_to_brat

        base = self.out_dir / doc_id
        base.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(base.with_name(base.name + ".txt"), doc.text)
        # The .ann is written last: its presence marks the document as done.
        _atomic_write(base.with_name(base.name + ".ann"), write_ann(doc_to_brat(doc, doc_id)))


class _JsonlSink:
    def __init__(self, out_file: Path):
        self.out_file = out_file
        out_file.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_last_line()

    def _drop_partial_last_line(self) -> None:
        if not self.out_file.exists():
            return
        data = self.out_file.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.out_file.open("r+b") as f:
                f.truncate(keep)

    def done(self) -> Set[str]:
        if not self.out_file.exists():
            return set()
        ids = set()
        with self.out_file.open(encoding="utf8") as f:
            for line in f:
                ids.add(str(json.loads(line)["id"]))
        return ids

    def write(self, doc_id: str, doc: Doc) -> None:
        with self.out_file.open("a", encoding="utf8") as f:
            f.write(json.dumps(doc_to_record(doc_id, doc), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- the loop -------------------------------------------------------------------
def annotate(
    nlp: Language,
    source: Path,
    output: Path,
    *,
    output_format: str = "brat",
    batch_size: int = 16,
    n_process: int = 1,
    progress: bool = True,
    gpu_id: int = -1,
) -> AnnotateReport:
    """Annotate every input not yet in ``output``; report failures, never stop on one.

    ``n_process > 1`` (-1: one per core) runs spawned CPU workers, each loading a copy
    of ``nlp`` with ``cores // n_process`` torch threads; outputs are the same as with one.
    ``gpu_id >= 0`` with ``n_process > 1``: the workers share that GPU (``parallel.WorkerPool``).
    """
    if output_format not in ("brat", "jsonl"):
        raise ValueError(f"Unknown output format '{output_format}': use 'brat' or 'jsonl'.")
    output = Path(output)
    sink = _BratSink(output) if output_format == "brat" else _JsonlSink(output)
    errors_path = (output if output_format == "brat" else output.parent) / ERRORS_FILE
    report = AnnotateReport()
    done = sink.done()
    pending: List[Tuple[str, str]] = []
    for doc_id, text, error in iter_inputs(source):
        if doc_id in done:
            report.skipped_existing += 1
        elif error is not None:
            _fail(report, errors_path, doc_id, error)
        else:
            pending.append((doc_id, text))
    bar = _progress(len(pending), progress)
    for results in _results(nlp, pending, batch_size, n_process, gpu_id):
        for doc_id, doc, error in results:
            if error is not None:
                _fail(report, errors_path, doc_id, error)
            else:
                sink.write(doc_id, doc)
                report.written += 1
            bar.update(1)
    bar.close()
    return report


def _results(
    nlp: Language, pending: List[Tuple[str, str]], batch_size: int, n_process: int, gpu_id: int = -1
) -> Iterator[List[Result]]:
    """Per chunk, in input order: in this process, or in ``n_process`` spawned
    workers (each with ``cores // n_process`` torch threads; see ``parallel``)."""
    if n_process == -1:
        n_process = available_cores()
    if n_process < 2 or len(pending) < 2:
        for start in range(0, len(pending), batch_size):
            yield process_chunk(nlp, pending[start : start + batch_size], batch_size=batch_size)
        return
    # Small inputs: split so that every worker gets a share.
    size = max(1, min(batch_size, math.ceil(len(pending) / n_process)))
    chunks = (pending[start : start + size] for start in range(0, len(pending), size))
    with WorkerPool(nlp, min(n_process, len(pending)), gpu_id=gpu_id) as pool:
        yield from pool.map(partial(process_chunk, batch_size=batch_size), chunks)


def process_chunk(nlp: Language, chunk: List[Tuple[str, str]], batch_size: int) -> List[Result]:
    """Process a chunk as one batch; if the batch fails, retry one by one to isolate the bad document."""
    try:
        docs = list(nlp.pipe((text for _, text in chunk), batch_size=batch_size))
        return [(doc_id, doc, None) for (doc_id, _), doc in zip(chunk, docs)]
    except Exception:  # noqa: BLE001 - isolate below
        logger.warning("A batch of %d documents failed; retrying them one by one.", len(chunk))
    results: List[Result] = []
    for doc_id, text in chunk:
        try:
            results.append((doc_id, nlp(text), None))
        except Exception as err:  # noqa: BLE001 - reported, the run goes on
            results.append((doc_id, None, f"{type(err).__name__}: {_short(err)}"))
    return results


def _fail(report: AnnotateReport, errors_path: Path, doc_id: str, error: str) -> None:
    entry = {"id": doc_id, "error": error}
    report.failed.append(entry)
    logger.error("Document %s failed: %s", doc_id, error)
    errors_path.parent.mkdir(parents=True, exist_ok=True)
    with errors_path.open("a", encoding="utf8") as f:
        f.write(json.dumps(entry) + "\n")


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="doc", desc="annotate")
