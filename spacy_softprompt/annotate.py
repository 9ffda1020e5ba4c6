"""Annotate a folder of notes (or a JSONL file) with a trained pipeline.

Resumable and lossless (docs/guarantees.md says exactly what holds):
* one run per output at a time (a lock file), duplicate note ids refused before
  anything is written;
* a document whose output already exists is skipped, so a killed run restarts
  where it stopped; brat files are written to a temporary name and renamed, and
  a JSONL line cut off by a kill is dropped on restart, so each document ends up
  written exactly once;
* brat files are named by :class:`~spacy_softprompt.safe_io.FileNames`: never
  outside the output folder, whatever the note id holds; ``doc_ids.jsonl`` maps
  each id to its file name;
* a document that cannot be read, processed or written is reported (id + error,
  never its text) in ``annotate_errors.jsonl`` (brat) or ``<stem>.errors.jsonl``
  (JSONL), once per note, and the others go on.
"""
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc

from .annotations import get_entities, get_relations
from .data.schema import Schema
from .overlap import OverlappedPipeline, prefetched
from .parallel import Result, WorkerPool, available_cores
from .safe_io import (
    PARTIAL_SUFFIX,
    AnnotateError,
    FileNames,
    OutputCorruptError,
    OutputLock,
    UniqueIds,
    append_line,
    atomic_write,
    lock_path_for,
    path_inside,
    remove_partial_files,
)

logger = logging.getLogger(__name__)

ERRORS_FILE = "annotate_errors.jsonl"
#: batches per worker chunk with ``overlap`` (a worker overlaps the batches of one chunk)
OVERLAP_BATCHES_PER_CHUNK = 4
OUTPUT_FORMATS = ("brat", "jsonl")
CONTEXT_ATTRIBUTES = ("is_negated", "is_historical", "is_hypothetical", "is_family", "is_uncertain", "section_category")


@dataclass
class AnnotateReport:
    written: int = 0
    skipped_existing: int = 0
    failed: List[Dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"written": self.written, "skipped_existing": self.skipped_existing, "failed": self.failed}


# ---- inputs ---------------------------------------------------------------------
#: (doc_id, text, error, where): ``where`` names the file (and line) of the note
LocatedNote = Tuple[str, Optional[str], Optional[str], str]


def check_source(source: Path, extra_suffixes: Tuple[str, ...] = ()) -> Path:
    """``source`` as a Path, or :class:`AnnotateError` naming it when it is missing
    or neither a folder nor a ``.jsonl`` (or one of ``extra_suffixes``) file."""
    source = Path(source)
    if not source.exists():
        raise AnnotateError(f"{source}: no such file or folder")
    if not source.is_dir() and source.suffix not in (".jsonl", *extra_suffixes):
        allowed = ", ".join(("a folder of .txt files", "a .jsonl file", *(f"a {s} file" for s in extra_suffixes)))
        raise AnnotateError(f"{source}: expected {allowed}")
    return source


def iter_located_inputs(source: Path) -> Iterator[LocatedNote]:
    """Yield ``(doc_id, text, error, where)`` from a folder of ``.txt`` files or a
    ``.jsonl`` file of ``{"id": ..., "text": ...}`` records; an unreadable item
    carries an error (never its text) and, for a bad JSONL line, the id
    ``<file>:<line>``."""
    source = check_source(source)
    if source.is_dir():
        for path in sorted(source.rglob("*.txt")):
            doc_id = path.relative_to(source).with_suffix("").as_posix()
            try:
                with path.open(encoding="utf8", newline="") as f:
                    yield doc_id, f.read(), None, str(path)
            except (UnicodeDecodeError, OSError) as err:
                yield doc_id, None, safe_error(err, None), str(path)
        return
    with source.open(encoding="utf-8-sig", errors="replace") as f:  # a byte-order mark is not part of line 1
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{source.name} line {line_no}"
            try:
                record = json.loads(line)
                doc_id, text = str(record["id"]), record["text"]
                if not isinstance(text, str):
                    raise TypeError("'text' is not a string")
                yield doc_id, text, None, where
            except (ValueError, KeyError, TypeError) as err:
                yield f"{source.name}:{line_no}", None, f"line {line_no}: {safe_error(err, None)}", where


def iter_inputs(source: Path) -> Iterator[Tuple[str, Optional[str], Optional[str]]]:
    """``(doc_id, text, error)`` of :func:`iter_located_inputs`."""
    for doc_id, text, error, _ in iter_located_inputs(source):
        yield doc_id, text, error


def safe_error(err: BaseException, text: Optional[str], limit: int = 160) -> str:
    """``Type: message`` with every word of the message (3+ characters) that occurs
    in the note replaced by ``[note text]``, cut to ``limit`` characters: the note
    never leaks into an error record."""
    message = str(err)
    if text:
        lowered = text.lower()

        def scrub(match: "re.Match[str]") -> str:
            word = match.group(0)
            return "[note text]" if len(word) >= 3 and word.lower() in lowered else word

        message = re.sub(r"\w+", scrub, message)
    message = " ".join(message.split())
    if len(message) > limit:
        message = message[:limit] + "..."
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


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


def write_brat_files(folder: Path, name: str, doc_id: str, doc: Doc, schema: Optional[Schema] = None) -> None:
    """``name.txt`` then ``name.ann`` under ``folder``, each atomically; the
    ``.ann`` comes last, so its presence marks the note as done. ``name`` comes
    from :class:`~spacy_softprompt.safe_io.FileNames` and is checked to stay inside ``folder``.
    With ``schema``, the annotations are in its source form
    (:func:`~spacy_softprompt.data.source_form.to_source_form`), else in the pipeline's labels."""
    from .data.brat import write_ann
    from .data.docs import doc_to_brat
    from .data.source_form import to_source_form

    txt, ann = path_inside(folder, name, ".txt"), path_inside(folder, name, ".ann")
    data_txt = doc.text.encode("utf8")  # an unencodable text fails here, before anything is written
    brat_doc = doc_to_brat(doc, doc_id)
    if schema is not None:
        brat_doc = to_source_form(brat_doc, schema)
    data_ann = write_ann(brat_doc).encode("utf8")
    txt.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(txt, data_txt)
    atomic_write(ann, data_ann)


class _BratSink:
    def __init__(self, out_dir: Path, schema: Optional[Schema] = None):
        self.out_dir = out_dir
        self.schema = schema
        self.names = FileNames(out_dir)
        self._name: Dict[str, str] = {}

    def prepare(self, ids: List[str]) -> Set[str]:
        """Give every id its file name; return the ids already written."""
        self._name = self.names.assign(ids)
        return {doc_id for doc_id, name in self._name.items() if (self.out_dir / (name + ".ann")).is_file()}

    def write(self, doc_id: str, doc: Doc) -> None:
        write_brat_files(self.out_dir, self._name[doc_id], doc_id, doc, self.schema)


class _JsonlSink:
    def __init__(self, out_file: Path):
        self.out_file = out_file
        self._drop_partial_last_line()

    def _drop_partial_last_line(self) -> None:
        if not self.out_file.exists():
            return
        data = self.out_file.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.out_file.open("r+b") as f:
                f.truncate(keep)

    def prepare(self, ids: List[str]) -> Set[str]:
        if not self.out_file.exists():
            return set()
        done = set()
        with self.out_file.open("rb") as f:
            for line_no, line in enumerate(f, 1):
                try:
                    done.add(str(json.loads(line)["id"]))
                except (ValueError, KeyError, TypeError) as err:
                    raise OutputCorruptError(
                        f"{self.out_file}:{line_no}: not an annotate record ({type(err).__name__}); "
                        "fix or remove that line to resume"
                    ) from None
        return done

    def write(self, doc_id: str, doc: Doc) -> None:
        line = (json.dumps(doc_to_record(doc_id, doc), ensure_ascii=False) + "\n").encode("utf8")
        with self.out_file.open("ab") as f:
            size = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except BaseException:
                f.truncate(size)  # never leave half a line behind a failed write
                raise


class ErrorLog:
    """The failed notes of one output: ``{"id", "error"}`` lines, one per id
    (a rerun that fails a note again adds nothing; a note that now succeeds is
    dropped when the run ends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: Dict[str, str] = {}
        self._dirty = False
        if not path.is_file():
            return
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines[-1]:  # a line cut by a kill: dropped before anything is appended
            with path.open("r+b") as f:
                f.truncate(len(data) - len(lines[-1]))
        for line_no, line in enumerate(lines[:-1], 1):
            try:
                entry = json.loads(line)
                doc_id, error = str(entry["id"]), str(entry["error"])
            except (ValueError, KeyError, TypeError):
                raise OutputCorruptError(f"{path}:{line_no}: not an error record; fix or remove that line") from None
            self._dirty |= doc_id in self.entries
            self.entries[doc_id] = error

    def fail(self, doc_id: str, error: str) -> None:
        if self.entries.get(doc_id) == error:
            return
        if doc_id in self.entries:
            self._dirty = True
        self.entries[doc_id] = error
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, {"id": doc_id, "error": error})

    def succeeded(self, doc_id: str) -> None:
        if self.entries.pop(doc_id, None) is not None:
            self._dirty = True

    def close(self) -> None:
        """Rewrite the file with one line per failed note when it holds more."""
        if not self._dirty:
            return
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        atomic_write(self.path, "".join(json.dumps({"id": i, "error": e}, ensure_ascii=True) + "\n" for i, e in self.entries.items()))


def errors_path_for(output: Path, output_format: str) -> Path:
    """``OUT/annotate_errors.jsonl`` for a brat folder, ``<stem>.errors.jsonl`` beside a JSONL file."""
    return output / ERRORS_FILE if output_format == "brat" else output.with_name(output.stem + ".errors.jsonl")


def check_brat_schema(brat_schema: Union[None, str, Path, Schema], output_format: str) -> Optional[Schema]:
    """The schema the brat files are written in (None: the pipeline's labels); refused for
    an output that is not brat, and a bad schema fails before anything is written."""
    from .data.errors import BratError
    from .data.schema import load_schema

    if brat_schema is None:
        return None
    if output_format != "brat":
        raise AnnotateError(f"a schema for the output applies to brat files, not to --format {output_format}")
    try:
        return load_schema(brat_schema)
    except BratError as err:
        raise AnnotateError(str(err)) from None


def check_output(output: Path, output_format: str) -> Path:
    """``output`` as a Path, or :class:`AnnotateError` when its kind does not fit the format."""
    if output_format not in OUTPUT_FORMATS:
        raise AnnotateError(f"unknown output format {output_format!r}: use {' or '.join(OUTPUT_FORMATS)}")
    output = Path(output)
    if output_format == "brat" and output.exists() and not output.is_dir():
        raise AnnotateError(f"{output}: --format brat writes a folder, and this is a file")
    if output_format == "jsonl" and output.is_dir():
        raise AnnotateError(f"{output}: --format jsonl writes a .jsonl file, and this is a folder")
    return output


def check_apart(source: Path, output: Path, output_is_folder: bool) -> None:
    """Refuse an output that is the input, or a folder inside an input folder
    (the next run would read its ``.txt`` files as notes)."""
    src, out = Path(source).resolve(), Path(output).resolve()
    if src == out:
        raise AnnotateError(f"{output}: this is the input itself; choose another output")
    if Path(source).is_dir() and output_is_folder and src in out.parents:
        raise AnnotateError(
            f"{output}: inside the input folder {source}, whose .txt files are read as notes: "
            "the next run would annotate the outputs; choose an output outside it"
        )


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
    brat_schema: Union[None, str, Path, Schema] = None,
    overlap: bool = False,
) -> AnnotateReport:
    """Annotate every input not yet in ``output``; report failures, never stop on one.

    Refuses duplicate note ids (naming both places) and a second run on the same
    output (:class:`~spacy_softprompt.safe_io.OutputLock`) before writing anything.
    ``n_process > 1`` (-1: one per core) runs spawned CPU workers, each loading a copy
    of ``nlp`` with ``cores // n_process`` torch threads; outputs are the same as with one.
    ``gpu_id >= 0`` with ``n_process > 1``: the workers share that GPU (``parallel.WorkerPool``).
    ``brat_schema`` (brat output only): write the files in that schema's source form
    (e.g. ``n2c2_2022_sdoh``: types, attribute lines and events as in SHAC).
    ``overlap``: the transformer of the next batch runs in a background thread while the
    heads work on this one (:mod:`~spacy_softprompt.overlap`); with workers, in each worker,
    on chunks of :data:`OVERLAP_BATCHES_PER_CHUNK` batches.
    """
    output = check_output(output, output_format)
    schema = check_brat_schema(brat_schema, output_format)
    source = check_source(source)
    is_file = output_format == "jsonl"
    check_apart(source, output, output_is_folder=not is_file)
    (output.parent if is_file else output).mkdir(parents=True, exist_ok=True)
    with OutputLock(lock_path_for(output, is_file), what=str(output)):
        if is_file:
            remove_partial_files(output.parent, f".{output.name}.*{PARTIAL_SUFFIX}")
        else:
            remove_partial_files(output)
        sink = _JsonlSink(output) if is_file else _BratSink(output, schema)
        errors = ErrorLog(errors_path_for(output, output_format))
        try:
            return _annotate_locked(nlp, source, sink, errors, batch_size, n_process, progress, gpu_id, overlap)
        finally:
            errors.close()


def _annotate_locked(
    nlp: Language,
    source: Path,
    sink: "Union[_JsonlSink, _BratSink]",
    errors: ErrorLog,
    batch_size: int,
    n_process: int,
    progress: bool,
    gpu_id: int = -1,
    overlap: bool = False,
) -> AnnotateReport:
    report = AnnotateReport()
    unique = UniqueIds(source)
    notes: List[Tuple[str, Optional[str], Optional[str]]] = []
    for doc_id, text, error, where in iter_located_inputs(source):
        unique.add(doc_id, where)
        notes.append((doc_id, text, error))
    done = sink.prepare([doc_id for doc_id, text, _ in notes if text is not None])
    pending: List[Tuple[str, str]] = []
    for doc_id, text, error in notes:
        if doc_id in done:
            report.skipped_existing += 1
            errors.succeeded(doc_id)
        elif error is not None:
            _fail(report, errors, doc_id, error)
        else:
            pending.append((doc_id, text))
    del notes
    texts = dict(pending)
    bar = _progress(len(pending), progress)
    for results in _results(nlp, pending, batch_size, n_process, gpu_id, overlap):
        for doc_id, doc, error in results:
            if error is None:
                try:
                    sink.write(doc_id, doc)
                except Exception as err:  # noqa: BLE001 - this note fails, the run goes on
                    error = f"could not write: {safe_error(err, texts.get(doc_id))}"
            if error is not None:
                _fail(report, errors, doc_id, error)
            else:
                errors.succeeded(doc_id)
                report.written += 1
            bar.update(1)
    bar.close()
    return report


def _results(
    nlp: Language, pending: List[Tuple[str, str]], batch_size: int, n_process: int, gpu_id: int = -1, overlap: bool = False
) -> Iterator[List[Result]]:
    """Per chunk, in input order: in this process, or in ``n_process`` spawned
    workers (each with ``cores // n_process`` torch threads; see ``parallel``)."""
    if n_process == -1:
        n_process = available_cores()
    if n_process < 2 or len(pending) < 2:
        results = pipe_isolating(nlp, pending, batch_size, overlap=overlap)
        for start in range(0, len(pending), batch_size):
            yield list(islice(results, batch_size))
        return
    # Small inputs: split so that every worker gets a share. With overlap a worker gets several
    # batches per chunk, so that it has a next batch to run the transformer on.
    per_chunk = batch_size * (OVERLAP_BATCHES_PER_CHUNK if overlap else 1)
    size = max(1, min(per_chunk, math.ceil(len(pending) / n_process)))
    chunks = (pending[start : start + size] for start in range(0, len(pending), size))
    with WorkerPool(nlp, min(n_process, len(pending)), gpu_id=gpu_id) as pool:
        yield from pool.map(partial(process_chunk, batch_size=batch_size, overlap=overlap), chunks)


def process_chunk(nlp: Language, chunk: List[Tuple[str, str]], batch_size: int, overlap: bool = False) -> List[Result]:
    """:func:`pipe_isolating` of one chunk, as a list (what a worker process returns)."""
    return list(pipe_isolating(nlp, chunk, batch_size, overlap=overlap))


def pipe_isolating(nlp: Language, notes: List[Tuple[str, str]], batch_size: int, overlap: bool = False) -> Iterator[Result]:
    """``(id, doc, None)`` or ``(id, None, error)`` per note, in order: batches of
    ``batch_size`` through ``nlp.pipe``; a batch that raises is redone note by
    note, so only the bad note fails. A note longer than ``nlp.max_length`` fails
    without being run. Errors are :func:`safe_error` lines (no note text).
    ``overlap``: the transformer of the next batch runs in a background thread
    while this one runs the heads (:mod:`~spacy_softprompt.overlap`); same results."""
    chunks = [notes[start : start + batch_size] for start in range(0, len(notes), batch_size)]
    fits = lambda chunk: [text for _, text in chunk if len(text) <= nlp.max_length]  # noqa: E731
    if not overlap:
        for chunk in chunks:
            yield from _isolated(nlp, chunk, lambda: list(nlp.pipe(fits(chunk), batch_size=batch_size)), nlp)
        return
    pipeline = OverlappedPipeline(nlp, batch_size)
    for chunk, front in prefetched(lambda chunk: pipeline.run_front(fits(chunk)), chunks):
        yield from _isolated(nlp, chunk, lambda: pipeline.run_back(front.result()), pipeline.run_one)


def _isolated(nlp: Language, chunk: List[Tuple[str, str]], run_batch: Callable[[], List[Doc]], run_one: Callable[[str], Doc]) -> List[Result]:
    """The results of one batch: ``run_batch()`` on the notes that fit ``nlp.max_length``,
    or, when it raises, ``run_one(text)`` note by note."""
    results: List[Optional[Result]] = [None] * len(chunk)
    runnable = []
    for i, (doc_id, text) in enumerate(chunk):
        if len(text) > nlp.max_length:
            results[i] = (doc_id, None, f"NoteTooLong: {len(text)} characters, over the pipeline's max_length {nlp.max_length}")
        else:
            runnable.append(i)
    try:
        docs = run_batch()
    except Exception:  # noqa: BLE001 - isolated below
        logger.warning("A batch of %d notes failed; redoing them one by one.", len(runnable))
        for i in runnable:
            doc_id, text = chunk[i]
            try:
                results[i] = (doc_id, run_one(text), None)
            except Exception as err:  # noqa: BLE001 - reported, the run goes on
                results[i] = (doc_id, None, safe_error(err, text))
    else:
        for i, doc in zip(runnable, docs):
            results[i] = (chunk[i][0], doc, None)
    return results  # type: ignore[return-value]


def _fail(report: AnnotateReport, errors: ErrorLog, doc_id: str, error: str) -> None:
    report.failed.append({"id": doc_id, "error": error})
    logger.error("Document %r failed: %s", doc_id, error)
    errors.fail(doc_id, error)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="doc", desc="annotate")
