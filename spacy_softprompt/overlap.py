"""Overlap the heads' host work of one batch with the backbone's work on the next, in one process.

``nlp.pipe`` runs a batch through every component before it starts the next
batch. On a GPU the device then idles while the CPU decodes, pools and writes
annotations, and the CPU idles while it waits for the forward: one process gets
the sum of the two times. :func:`pipe_overlapped` splits the pipeline after
the component that runs the backbone (the *front*: tokenizer through
``transformer``) and runs the front of batch ``i + 1`` in a background thread
while the calling thread runs the rest (the *back*: ``token_ner``,
``relation_extractor``, ...) on batch ``i``. PyTorch releases the GIL while a
forward runs and while it waits for the device, so the two overlap; the
outputs are those of ``nlp.pipe``, in the same order.

One thread runs the front, one batch ahead; the back reads each doc's
``doc._.trf_data``, as in ``nlp.pipe``. On a CPU both halves compete for the
same cores, so the gain there is small (docs/speed.md).
"""
import contextvars
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, TypeVar

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import minibatch

Item = TypeVar("Item")
Stage = Tuple[str, Callable]

#: the component the front ends with when none is named
FRONT_END = "transformer"


def split_pipeline(nlp: Language, front_end: Optional[str] = None) -> Tuple[List[Stage], List[Stage]]:
    """``(front, back)``: the enabled components up to and including ``front_end``,
    and the ones after it. By default the front ends with ``transformer``; a
    pipeline without one has an empty front (only its tokenizer runs ahead)."""
    names = nlp.pipe_names
    if front_end is None and FRONT_END not in names:
        return [], list(nlp.pipeline)
    end = front_end or FRONT_END
    if end not in names:
        raise ValueError(
            f"no component {end!r} to end the overlapped front with (components: {', '.join(names) or 'none'}); "
            "name the component that runs the backbone"
        )
    cut = names.index(end) + 1
    return list(nlp.pipeline[:cut]), list(nlp.pipeline[cut:])


def run_stages(stages: List[Stage], docs: List[Doc], batch_size: int) -> List[Doc]:
    """``docs`` through ``stages`` in order, as ``nlp.pipe`` runs its components."""
    for _, proc in stages:
        docs = list(proc.pipe(docs, batch_size=batch_size)) if hasattr(proc, "pipe") else [proc(doc) for doc in docs]
    return docs


def current_devices() -> Callable[[], None]:
    """A function that makes a thread use the GPU this one uses: CUDA's current device
    is per thread in cupy and torch, and a new thread starts on device 0 (a pipeline
    on ``--gpu-id 1`` would allocate its front's arrays on the wrong GPU)."""
    cupy_device = torch_device = None
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        try:
            cupy_device = int(cupy.cuda.runtime.getDevice())
        except Exception:  # noqa: BLE001 - no CUDA here: nothing to carry over
            cupy_device = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch_device = int(torch.cuda.current_device())

    def use() -> None:
        if cupy_device is not None:
            cupy.cuda.Device(cupy_device).use()
        if torch_device is not None:
            torch.cuda.set_device(torch_device)

    return use


def prefetched(fn: Callable[[Item], object], items: Iterable[Item], ahead: int = 1) -> Iterator[Tuple[Item, Future]]:
    """``(item, future of fn(item))`` in order, ``fn`` run in one background thread
    up to ``ahead`` items before the caller asks for them, on the caller's GPU (if any)
    and with a copy of the caller's context variables (thinc's current ops).
    A failed call raises from its future's ``result()``; closing the iterator drops the
    calls not started."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spacy-softprompt-front", initializer=current_devices())
    pending: "deque[Tuple[Item, Future]]" = deque()
    try:
        for item in items:
            # the caller's context variables go along (thinc keeps its current ops, CPU or GPU, in one)
            pending.append((item, pool.submit(contextvars.copy_context().run, fn, item)))
            if len(pending) > ahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class OverlappedPipeline:
    """The front / back split of ``nlp`` and the lock that keeps the front's
    components to one thread at a time (the background thread, or the caller
    when it re-runs notes one by one)."""

    def __init__(self, nlp: Language, batch_size: int, front_end: Optional[str] = None):
        self.nlp = nlp
        self.batch_size = batch_size
        self.front, self.back = split_pipeline(nlp, front_end)
        self.front_lock = threading.Lock()

    def run_front(self, texts: List[str]) -> List[Doc]:
        with self.front_lock:
            return run_stages(self.front, [self.nlp.make_doc(text) for text in texts], self.batch_size)

    def run_back(self, docs: List[Doc]) -> List[Doc]:
        return run_stages(self.back, docs, self.batch_size)

    def run_one(self, text: str) -> Doc:
        """One note through the whole pipeline (the front under the lock)."""
        return self.run_back(self.run_front([text]))[0]


def pipe_overlapped(nlp: Language, texts: Iterable[str], batch_size: int = 32, front_end: Optional[str] = None) -> Iterator[Doc]:
    """The docs of ``nlp.pipe(texts, batch_size=batch_size)``, in order, with the
    front of the next batch (tokenizer .. ``front_end``) computed in a background
    thread while this one runs the rest of the pipeline on the current batch."""
    pipeline = OverlappedPipeline(nlp, batch_size, front_end)
    for _, front_docs in prefetched(pipeline.run_front, (list(batch) for batch in minibatch(texts, batch_size))):
        yield from pipeline.run_back(front_docs.result())
