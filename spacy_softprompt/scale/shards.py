"""Pack the input into immutable, deterministically named shards.

The input (a folder of ``.txt``, a ``.jsonl`` of ``{"id", "text"}``, or Parquet
with ``id``/``text`` columns) is cut, in input order, into JSONL shards of
``shard_size`` notes. A shard is named by its position and the SHA-256 of its
bytes (``shard-00003-1a2b3c4d5e6f``), so the same input always gives the same
names and a changed input can never be mistaken for a done one. The manifest
(written last) lists the shards; a rerun re-packs the input and refuses to go on
if it differs from the manifest. Duplicate note ids are refused.
"""
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..safe_io import UniqueIds, atomic_write
from .errors import InputChangedError, ScaleError

INPUT_DIR = "input"
OUTPUT_DIR = "output"
MANIFEST = "manifest.json"
OUTPUT_FORMATS = ("jsonl", "parquet")

LocatedNote = Tuple[str, Optional[str], Optional[str], str]  # (id, text, error reading it, where)


@dataclass(frozen=True)
class Shard:
    name: str
    notes: int
    sha256: str


@dataclass
class ShardPlan:
    """The packed input of one output folder."""

    root: Path
    shards: List[Shard]
    shard_size: int
    source: str

    @property
    def notes(self) -> int:
        return sum(s.notes for s in self.shards)

    def input_path(self, shard: Shard) -> Path:
        return self.root / INPUT_DIR / f"{shard.name}.jsonl"

    def output_path(self, shard: Shard, output_format: str) -> Path:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"Unknown output format '{output_format}': use one of {', '.join(OUTPUT_FORMATS)}.")
        return self.root / OUTPUT_DIR / f"{shard.name}.{output_format}"


# ---- reading the input ------------------------------------------------------------
def iter_notes(source: Path) -> Iterator[LocatedNote]:
    """``(id, text, error, where)`` for every note of ``source``, in a fixed order; an
    unreadable note has ``text`` None and an error without its text."""
    source = Path(source)
    if source.suffix == ".parquet":
        yield from _iter_parquet(source)
        return
    from ..annotate import iter_located_inputs

    yield from iter_located_inputs(source)


def _iter_parquet(source: Path) -> Iterator[LocatedNote]:
    """A ``.parquet`` file, or a folder of them (as Spark writes ``notes.parquet/part-*``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - pyarrow comes with the scale extra
        raise ScaleError("reading Parquet needs pyarrow: pip install 'spacy-softprompt[scale]'") from err
    files = sorted(source.rglob("*.parquet")) if source.is_dir() else [source]
    if not files:
        raise ScaleError(f"{source}: no .parquet files in this folder")
    for path in files:
        parquet = pq.ParquetFile(path)
        missing = {"id", "text"} - set(parquet.schema_arrow.names)
        if missing:
            raise ScaleError(f"{path}: Parquet input needs columns 'id' and 'text' (missing: {', '.join(sorted(missing))})")
        row = 0
        for batch in parquet.iter_batches(columns=["id", "text"], batch_size=4096):
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                row += 1
                where = f"{path.name} row {row}"
                if doc_id is None:
                    raise ScaleError(f"{path}: a note has no id (null in column 'id', {where})")
                if isinstance(text, str):
                    yield str(doc_id), text, None, where
                else:
                    yield str(doc_id), None, "TypeError: 'text' is not a string", where


# ---- packing ------------------------------------------------------------------------
def pack(source: Path, root: Path, shard_size: int = 1000) -> ShardPlan:
    """Pack ``source`` into shards under ``root/input`` (or check that the shards
    already there came from the same input) and return the plan."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    source, root = Path(source), Path(root)
    if not source.exists():
        raise ScaleError(f"{source}: no such file or folder")
    if not source.is_dir() and source.suffix not in (".jsonl", ".parquet"):
        raise ScaleError(f"{source}: expected a folder of .txt or .parquet files, a .jsonl or a .parquet file")
    shard_dir = root / INPUT_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(root)
    unique = UniqueIds(source)
    shards: List[Shard] = []
    chunk: List[bytes] = []

    def flush() -> None:
        shard = _write_shard(shard_dir, len(shards), chunk)
        if previous is not None:
            _check_same(previous, shards, shard, shard_size)
        shards.append(shard)
        chunk.clear()

    for doc_id, text, error, where in iter_notes(source):
        unique.add(doc_id, where)
        chunk.append(_shard_line({"id": doc_id, "text": text, "error": error}))
        if len(chunk) == shard_size:
            flush()
    if chunk:
        flush()
    if previous is not None and len(previous["shards"]) != len(shards):
        raise InputChangedError(
            f"{root} was started from an input with {len(previous['shards'])} shards, this one has {len(shards)}: "
            "use a new output folder"
        )
    plan = ShardPlan(root=root, shards=shards, shard_size=shard_size, source=str(source.resolve()))
    if previous is None:
        atomic_write(root / INPUT_DIR / MANIFEST, json.dumps(_manifest(plan), indent=1).encode("utf8"))
    return plan


def load_plan(root: Path) -> ShardPlan:
    """The plan recorded in ``root`` (for verification or workers)."""
    manifest = _read_manifest(Path(root))
    if manifest is None:
        raise ScaleError(f"{root}: no {INPUT_DIR}/{MANIFEST}; pack the input first")
    shards = [Shard(**s) for s in manifest["shards"]]
    return ShardPlan(root=Path(root), shards=shards, shard_size=manifest["shard_size"], source=manifest["source"])


def read_shard(path: Path) -> Iterator[Dict[str, Any]]:
    """The ``{"id", "text", "error"}`` records of an input shard."""
    with Path(path).open(encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except ValueError:
                raise ScaleError(f"{path}:{line_no}: not an input shard record; use a new output folder") from None


def _write_shard(shard_dir: Path, index: int, lines: List[bytes]) -> Shard:
    data = b"".join(lines)
    digest = hashlib.sha256(data).hexdigest()
    shard = Shard(name=f"shard-{index:05d}-{digest[:12]}", notes=len(lines), sha256=digest)
    path = shard_dir / f"{shard.name}.jsonl"
    if not (path.is_file() and path.stat().st_size == len(data)):
        atomic_write(path, data)
    return shard


def _check_same(previous: Dict[str, Any], done: List[Shard], shard: Shard, shard_size: int) -> None:
    index = len(done)
    if previous["shard_size"] != shard_size:
        raise InputChangedError(
            f"{previous['root']} was packed with shard size {previous['shard_size']}, not {shard_size}: "
            "use the same shard size or a new output folder"
        )
    old = previous["shards"][index] if index < len(previous["shards"]) else None
    if old is None or old["sha256"] != shard.sha256:
        raise InputChangedError(
            f"{previous['root']} was started from a different input (shard {index} differs from {previous['source']}): "
            "use a new output folder"
        )


def _manifest(plan: ShardPlan) -> Dict[str, Any]:
    return {
        "version": 1,
        "source": plan.source,
        "shard_size": plan.shard_size,
        "notes": plan.notes,
        "shards": [asdict(s) for s in plan.shards],
    }


def _read_manifest(root: Path) -> Optional[Dict[str, Any]]:
    path = root / INPUT_DIR / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf8"))
        manifest["root"] = str(root)
    except (ValueError, TypeError) as err:
        raise ScaleError(f"{path}: not a shard manifest ({type(err).__name__}); use a new output folder") from None
    return manifest


def _shard_line(record: Dict[str, Any]) -> bytes:
    """A JSONL line; a note with unencodable text (a lone surrogate) is escaped
    instead of failing the whole input."""
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")
