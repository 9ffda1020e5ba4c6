"""Several CPU processes without deadlocking on torch's thread pool.

torch runs its CPU kernels on an OpenMP thread pool that is not fork-safe: a
child forked after the parent has used the pool hangs on its first parallel
kernel. Two paths are made safe:

* ``nlp.pipe(n_process=N)``: spaCy forks its workers (the platform's default
  start method). Importing ``spacy_softprompt`` registers an after-fork hook
  that puts torch on one thread in every forked child, before it can touch the
  inherited pool. Each worker then runs single-threaded.
* :class:`WorkerPool` (used by ``annotate --n-process N``): workers are
  *spawned* (fresh interpreters, nothing inherited), each sets torch to
  ``cores // N`` threads and loads the pipeline from a copy saved once.

One GPU, many CPU workers: with ``gpu_id >= 0`` every spawned worker selects
that GPU (``spacy.require_gpu``) before loading its copy, so N processes share
one device: each does its tokenisation, wordpieces, alignment and decoding on
its own CPU core while the GPU runs the forwards of all of them (docs/speed.md).
CUDA cannot be used in a forked child, which is why the workers are spawned.
"""
import importlib
import multiprocessing
import os
import sys
import tempfile
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Tuple

from spacy.language import Language
from spacy.tokens import Doc

#: (doc_id, Doc or None, error or None): what a worker function returns per document
Result = Tuple[str, Optional[Doc], Optional[str]]
ChunkFn = Callable[[Language, List[Tuple[str, str]]], List[Result]]

_fork_guard_installed = False


def install_fork_guard() -> None:
    """Register (once) the after-fork hook that puts torch on one thread in a forked child."""
    global _fork_guard_installed
    if _fork_guard_installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_one_torch_thread_in_child)
    _fork_guard_installed = True


def _one_torch_thread_in_child() -> None:
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "set_num_threads"):
        return  # torch not (fully) imported: there is no pool to inherit
    try:
        torch.set_num_threads(1)
    except Exception:  # noqa: BLE001 - a failing hook must not break the fork
        pass


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_threads(n_process: int, cores: Optional[int] = None) -> int:
    """torch threads per worker so that ``n_process`` workers share the cores."""
    return max(1, (cores or available_cores()) // max(1, n_process))


def factory_modules(nlp: Language) -> List[str]:
    """Modules defining the pipeline's factories, to import in a fresh worker
    (components registered by a script or a test module, not by entry points)."""
    from spacy.util import registry

    modules = set()
    for name, proc in nlp.components:
        factory = nlp.get_pipe_meta(name).factory
        try:
            modules.add(registry.factories.get(Language.get_factory_name(factory)).__module__)
        except Exception:  # noqa: BLE001 - e.g. a language-specific factory: spacy.load finds it
            pass
        # A @Language.component's factory is a wrapper in spacy.language: the
        # function (or a component's class) names the module that registers it.
        modules.add(getattr(proc, "__module__", None))
    return sorted(m for m in modules if m and m not in ("__main__", "__mp_main__", "builtins"))


# ---- worker side ----------------------------------------------------------------
_worker_nlp: Optional[Language] = None
_worker_error: Optional[str] = None


_worker_device: str = "cpu"


def _init_worker(model_dir: str, threads: int, modules: List[str], gpu_id: int = -1) -> None:
    global _worker_nlp, _worker_error, _worker_device
    try:
        from .memory import apply_malloc_setting

        apply_malloc_setting()  # the parent's choice, through the environment (MALLOC_ENV)
        import torch

        torch.set_num_threads(threads)
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError:  # spacy.load says what is missing, if anything
                pass
        import spacy

        if gpu_id >= 0:
            spacy.require_gpu(gpu_id)
            _worker_device = f"cuda:{gpu_id}"
        _worker_nlp = spacy.load(model_dir)
    except Exception as err:  # noqa: BLE001 - reported with the first chunk
        _worker_error = f"{type(err).__name__}: {str(err)[:300]}"


def _run_chunk(fn: ChunkFn, chunk: List[Tuple[str, str]]) -> List[Tuple[str, Optional[bytes], Optional[str]]]:
    if _worker_nlp is None:
        raise WorkerError(f"a worker process could not load the pipeline: {_worker_error}")
    return [(doc_id, None if doc is None else doc.to_bytes(), error) for doc_id, doc, error in fn(_worker_nlp, chunk)]


def _worker_info() -> Tuple[int, int, str, Optional[str]]:
    import torch

    return os.getpid(), torch.get_num_threads(), _worker_device, _worker_error


def _worker_pid_and(fn: Callable[[], Any]) -> Tuple[int, Any]:
    return os.getpid(), fn()


# ---- parent side ----------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker process could not start or load the pipeline."""


class WorkerPool:
    """``n_process`` spawned workers, each holding its own copy of ``nlp``.

    Use as a context manager; :meth:`map` runs a module-level function
    ``fn(nlp, chunk) -> [(doc_id, Doc | None, error | None)]`` on each chunk of
    ``(doc_id, text)`` pairs in the workers and yields the results in order.
    ``gpu_id >= 0``: every worker runs its pipeline on that GPU (shared).
    """

    def __init__(self, nlp: Language, n_process: int, threads: Optional[int] = None, gpu_id: int = -1):
        if n_process < 2:
            raise ValueError("WorkerPool needs n_process >= 2")
        self.nlp = nlp
        self.n_process = n_process
        self.gpu_id = int(gpu_id)
        self.threads = threads or worker_threads(n_process)
        self._tmp = tempfile.TemporaryDirectory(prefix="spacy_softprompt_workers_")
        model_dir = Path(self._tmp.name) / "pipeline"
        nlp.to_disk(model_dir)
        self._executor = ProcessPoolExecutor(
            max_workers=n_process,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(model_dir), self.threads, factory_modules(nlp), self.gpu_id),
        )

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._tmp.cleanup()

    def worker_info(self) -> List[Tuple[int, int, str, Optional[str]]]:
        """(pid, torch threads, device, load error or None) as seen by the workers
        that answered (for tests and logs)."""
        return self._ask_workers(_worker_info)

    def memory_retained(self) -> List[bool]:
        """Whether each worker that answered keeps freed memory (:mod:`.memory`), by pid order."""
        from .memory import memory_is_retained

        return [retained for _, retained in self._ask_workers(_worker_pid_and, memory_is_retained)]

    def _ask_workers(self, fn: Callable[..., Tuple], *args: Any) -> List[Tuple]:
        """``fn(*args)`` (whose first item is the worker's pid) from the workers that answer
        ``2 * n_process`` requests, one answer per distinct result, sorted."""
        futures = [self._executor.submit(fn, *args) for _ in range(self.n_process * 2)]
        return sorted({f.result() for f in futures})

    def map(self, fn: ChunkFn, chunks: Iterable[List[Tuple[str, str]]]) -> Iterator[List[Result]]:
        """Results of ``fn`` per chunk, in the order of ``chunks``; at most two
        chunks per worker are in flight."""
        pending: Deque[Future] = deque()
        chunks = iter(chunks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * self.n_process:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                else:
                    pending.append(self._executor.submit(_run_chunk, fn, chunk))
            if not pending:
                return
            results = pending.popleft().result()
            yield [
                (doc_id, None if data is None else Doc(self.nlp.vocab).from_bytes(data), error)
                for doc_id, data, error in results
            ]
