"""Writing annotate outputs safely: one atomic writer, one lock per output,
note ids turned into safe file names, duplicate ids refused.

* :func:`atomic_write` / :func:`atomic_path`: a temporary name unique to the
  process and thread (``.<name>.<pid>.<thread>.<random>.partial``) in the target's
  folder, ``fsync``, ``os.replace``; the temporary file is removed when writing
  fails. :func:`remove_partial_files` deletes those a killed writer left behind.
* :class:`OutputLock`: one writer per output (a lock file holding the owner's
  pid and host, locked with ``flock``; the kernel releases it when the owner
  dies, so a stale lock file is taken over, never trusted).
* :class:`FileNames`: note id -> a file name that stays inside the output folder
  (no ``..``, no absolute path, no NUL, no reserved or over-long name, no two ids
  on one name even on a case-insensitive file system), stable across reruns and
  recorded in ``doc_ids.jsonl`` so a user finds the note id of every file.
* :class:`UniqueIds`: refuses a second note with an id already seen, naming both places.
"""
import hashlib
import json
import os
import re
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Union

PathLike = Union[str, Path]

#: the id -> file name record of a brat output folder
MAP_FILE = "doc_ids.jsonl"
#: the lock file of an output folder (``.<file>.lock`` beside a JSONL output file)
LOCK_FILE = ".annotate.lock"
PARTIAL_SUFFIX = ".partial"

MAX_COMPONENT = 100
MAX_NAME = 200
_HASH_CHARS = 12
_PLAIN_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9 _.,+=@#()'-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
#: names Windows reserves, with or without an extension
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


class AnnotateError(Exception):
    """A problem with the input or the output of an annotate run (one line, no note text)."""


class DuplicateNoteIdError(AnnotateError):
    """Two notes of the input share an id, so "exactly once" has no meaning."""


class OutputLockedError(AnnotateError):
    """Another run is writing into the same output."""


class OutputCorruptError(AnnotateError):
    """An existing output file cannot be read back (named with its line)."""


# ---- atomic writes --------------------------------------------------------------------
def temporary_name(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses."""
    unique = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{unique}{PARTIAL_SUFFIX}")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` to; on success it is fsynced and
    renamed over ``path``, on failure removed (``path`` is then untouched)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: PathLike, data: Union[str, bytes]) -> None:
    """Write ``data`` (str as UTF-8, newlines untouched) to ``path`` atomically."""
    payload = data.encode("utf8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def remove_partial_files(folder: PathLike, pattern: str = f"*{PARTIAL_SUFFIX}") -> int:
    """Delete temporary files left by killed writers under ``folder``; return how
    many. Call it only while holding the folder's :class:`OutputLock`."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for tmp in folder.rglob(pattern):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def append_line(path: Path, record: dict) -> None:
    """One JSON line (ASCII, so any id can be written) appended and fsynced."""
    with path.open("ab") as f:
        f.write((json.dumps(record, ensure_ascii=True) + "\n").encode("ascii"))
        f.flush()
        os.fsync(f.fileno())


# ---- one writer per output ----------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Held by the one run that writes an output; ``with OutputLock(path): ...``.

    On POSIX the file is locked with ``flock`` (released by the kernel when the
    owner dies, so a lock file left by a killed run is taken over); elsewhere
    the file is created exclusively and a file whose pid no longer runs on this
    host is stale. The file holds ``{"pid", "host", "started"}`` for the message
    a second run gets.
    """

    def __init__(self, path: PathLike, what: str = "") -> None:
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self._fd: Optional[int] = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _owner_text(self) -> str:
        try:
            owner = json.loads(self.path.read_text(encoding="utf8"))
            return f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}"
        except (OSError, ValueError, AttributeError):
            return "owner unknown"

    def _refuse(self) -> OutputLockedError:
        return OutputLockedError(
            f"{self.what}: another annotate run is writing here ({self._owner_text()}; lock file {self.path}); "
            "wait for it to finish or use another output"
        )

    def _stamp(self) -> bytes:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return json.dumps(info).encode("utf8")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            self._acquire_exclusive()
            return
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refuse() from None
            try:  # the file we locked must still be the one at the path (a releasing owner unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, self._stamp())
                os.fsync(fd)
                self._fd = fd
                return
            os.close(fd)
        raise self._refuse()

    def _acquire_exclusive(self) -> None:  # pragma: no cover - not POSIX
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text(encoding="utf8"))
                except (OSError, ValueError):
                    raise self._refuse() from None
                if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", 0))):
                    self.path.unlink(missing_ok=True)
                    continue
                raise self._refuse() from None
            os.write(fd, self._stamp())
            os.fsync(fd)
            self._fd = fd
            return
        raise self._refuse()

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def lock_path_for(output: Path, output_is_file: bool) -> Path:
    """The lock of an output folder (inside it) or output file (beside it)."""
    return output.with_name(f".{output.name}.lock") if output_is_file else output / LOCK_FILE


# ---- note ids ------------------------------------------------------------------------------
class UniqueIds:
    """Remembers where each id was seen; :meth:`add` raises on a second sighting."""

    def __init__(self, source: PathLike) -> None:
        self.source = source
        self._where: Dict[str, str] = {}

    def add(self, doc_id: str, where: str) -> None:
        first = self._where.setdefault(doc_id, where)
        if first != where:
            raise DuplicateNoteIdError(
                f"note id {doc_id!r} appears twice in {self.source} ({first} and {where}); "
                "ids must be unique for each note to be written exactly once"
            )


def id_digest(doc_id: str) -> str:
    return hashlib.sha256(doc_id.encode("utf8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def is_plain_name(name: str) -> bool:
    """Whether ``name`` can be used as a relative file name as it is: ``/``-separated
    components of ASCII letters, digits, spaces and ``_ . , + = @ # ( ) ' -``
    (starting with a letter, digit or ``_``; not ending with ``.`` or a space), none
    reserved on Windows (``CON``, ``NUL.txt``, ...), none over
    :data:`MAX_COMPONENT` characters, all together at most :data:`MAX_NAME`."""
    if not name or len(name) > MAX_NAME:
        return False
    for part in name.split("/"):
        if not _PLAIN_COMPONENT.fullmatch(part) or part.endswith((".", " ")) or len(part) > MAX_COMPONENT:
            return False
        if part.split(".")[0].lower() in _RESERVED:
            return False
    return True


def hashed_name(doc_id: str) -> str:
    """``<sanitised id, at most 60 characters>-<12 hex of its SHA-256>`` (``note-<hash>``
    when nothing of the id survives): always plain, unique with overwhelming odds."""
    stem = _UNSAFE_RUN.sub("_", doc_id).lstrip("._-")[:60].rstrip(".")
    if stem.split(".")[0].lower() in _RESERVED:
        stem = "_" + stem
    return f"{stem or 'note'}-{id_digest(doc_id)}"


class FileNames:
    """Note id -> file name (without extension) under ``folder``, recorded in
    ``folder/doc_ids.jsonl`` as ``{"id": ..., "file": ...}`` lines.

    A plain id (:func:`is_plain_name`) is its own name; any other id, or one
    whose name is taken by another id up to case, gets :func:`hashed_name`. A
    name once given is read back from the record on the next run, so names never
    change. Only one process may assign names in a folder (the lock holder)."""

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self.record = self.folder / MAP_FILE
        self.names: Dict[str, str] = {}
        self._taken: Dict[str, str] = {}  # lowercased name -> id
        self._load()

    def _load(self) -> None:
        if not self.record.is_file():
            return
        data = self.record.read_bytes()
        if data and not data.endswith(b"\n"):  # a line cut by a kill: its note was not written
            with self.record.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
            data = data[: data.rfind(b"\n") + 1]
        for line_no, line in enumerate(data.decode("utf8", "replace").splitlines(), 1):
            try:
                entry = json.loads(line)
                doc_id, name = str(entry["id"]), str(entry["file"])
            except (ValueError, KeyError, TypeError) as err:
                raise OutputCorruptError(f"{self.record}:{line_no}: not an id record ({type(err).__name__})") from None
            if not is_plain_name(name):
                raise OutputCorruptError(f"{self.record}:{line_no}: file name {name!r} is not a safe relative name")
            self._remember(doc_id, name)

    def _remember(self, doc_id: str, name: str) -> None:
        self.names[doc_id] = name
        self._taken[name.lower()] = doc_id

    def _free(self, name: str, doc_id: str) -> bool:
        return self._taken.get(name.lower(), doc_id) == doc_id

    def assign(self, ids: Iterable[str]) -> Dict[str, str]:
        """Names of ``ids`` (new ones recorded, all in one append); returns id -> name."""
        new: List[dict] = []
        out: Dict[str, str] = {}
        for doc_id in ids:
            name = self.names.get(doc_id)
            if name is None:
                name = doc_id if is_plain_name(doc_id) and self._free(doc_id, doc_id) else hashed_name(doc_id)
                base, n = name, 1
                while not self._free(name, doc_id):  # a hash collision: astronomically rare
                    name, n = f"{base}-{n}", n + 1
                self._remember(doc_id, name)
                new.append({"id": doc_id, "file": name})
            out[doc_id] = name
        if new:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self.record.open("ab") as f:
                f.write("".join(json.dumps(e, ensure_ascii=True) + "\n" for e in new).encode("ascii"))
                f.flush()
                os.fsync(f.fileno())
        return out


def path_inside(folder: Path, name: str, suffix: str) -> Path:
    """``folder/name + suffix``, refusing any name that would leave ``folder``."""
    if not is_plain_name(name):
        raise AnnotateError(f"refusing to write file name {name!r}: not a safe relative name")
    path = folder / (name + suffix)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise AnnotateError(f"refusing to write {path}: it resolves outside {folder}")
    return path
