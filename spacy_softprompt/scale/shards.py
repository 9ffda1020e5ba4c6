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
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import DuplicateNoteIdError, InputChangedError, ScaleError

INPUT_DIR = "input"
OUTPUT_DIR = "output"
MANIFEST = "manifest.json"
OUTPUT_FORMATS = ("jsonl", "parquet")

Note = Tuple[str, Optional[str], Optional[str]]  # (id, text, error reading it)


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
def iter_notes(source: Path) -> Iterator[Note]:
    """``(id, text, error)`` for every note of ``source``, in a fixed order; an
    unreadable note has ``text`` None and an error without its text."""
    source = Path(source)
    if source.suffix == ".parquet":
        yield from _iter_parquet(source)
        return
    from ..annotate import iter_inputs

    yield from iter_inputs(source)


def _iter_parquet(source: Path) -> Iterator[Note]:
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
        for batch in parquet.iter_batches(columns=["id", "text"], batch_size=4096):
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                if doc_id is None:
                    raise ScaleError(f"{path}: a note has no id (null in column 'id')")
                if isinstance(text, str):
                    yield str(doc_id), text, None
                else:
                    yield str(doc_id), None, "TypeError: 'text' is not a string"


# ---- packing ------------------------------------------------------------------------
def pack(source: Path, root: Path, shard_size: int = 1000) -> ShardPlan:
    """Pack ``source`` into shards under ``root/input`` (or check that the shards
    already there came from the same input) and return the plan."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    source, root = Path(source), Path(root)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    shard_dir = root / INPUT_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(root)
    seen: Dict[str, int] = {}
    shards: List[Shard] = []
    chunk: List[bytes] = []

    def flush() -> None:
        shard = _write_shard(shard_dir, len(shards), chunk)
        if previous is not None:
            _check_same(previous, shards, shard, shard_size)
        shards.append(shard)
        chunk.clear()

    for position, (doc_id, text, error) in enumerate(iter_notes(source)):
        first = seen.setdefault(doc_id, position)
        if first != position:
            raise DuplicateNoteIdError(
                f"note id {doc_id!r} appears twice in {source} (notes #{first + 1} and #{position + 1}); "
                "ids must be unique for each note to be annotated exactly once"
            )
        record = {"id": doc_id, "text": text, "error": error}
        chunk.append((json.dumps(record, ensure_ascii=False) + "\n").encode("utf8"))
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
        _atomic_write_bytes(root / INPUT_DIR / MANIFEST, json.dumps(_manifest(plan), indent=1).encode("utf8"))
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
        for line in f:
            yield json.loads(line)


def _write_shard(shard_dir: Path, index: int, lines: List[bytes]) -> Shard:
    data = b"".join(lines)
    digest = hashlib.sha256(data).hexdigest()
    shard = Shard(name=f"shard-{index:05d}-{digest[:12]}", notes=len(lines), sha256=digest)
    path = shard_dir / f"{shard.name}.jsonl"
    if not (path.is_file() and path.stat().st_size == len(data)):
        _atomic_write_bytes(path, data)
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
    manifest = json.loads(path.read_text(encoding="utf8"))
    manifest["root"] = str(root)
    return manifest


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
