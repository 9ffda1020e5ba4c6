"""Keep freed heap memory in the process, so that large arrays reuse pages already touched.

glibc's ``malloc`` hands every allocation above its mmap threshold (128 KiB at
first, raised to the largest block freed so far) a fresh ``mmap`` and gives it
back to the kernel on ``free``. Inference allocates the same few large blocks
over and over (the encoder's ``[windows, L, H]`` output and its activations,
tens of MB per batch), so every batch pays the kernel again to fault in and
zero those pages: on MiniLM about 25,000 page faults per pass over 30 clinical
notes, a sixth of the host work around the forward (docs/speed.md).

:func:`retain_freed_memory` raises both the mmap threshold and the trim
threshold (``mallopt``), so such blocks come from the heap and stay there when
freed: the next batch reuses them. The process's memory then stays at its peak
instead of falling between batches (peak figures: docs/speed.md). ``annotate``
does this by default (``--malloc default`` leaves glibc's behaviour), in its
spawned and Ray workers too, through :data:`MALLOC_ENV`; there the heap stays
at its peak (four shuffled passes over 162 notes: flat after the third).
Training does not by default: its blocks vary in size from step to step, the
heap fragments and keeps growing (a fine-tuning run on DDI grew by 2.3 GB in
100 steps and was killed for memory near 20 GB; glibc's default levelled off
at 3.4 GB), so ``train --malloc retain`` is an opt-in. Elsewhere (not Linux,
not glibc) it does nothing.
"""
import ctypes
import os
import platform
import sys
from typing import Optional

#: ``retain`` (the default of ``annotate``) or ``default``; read by :func:`apply_malloc_setting`,
#: which spawned and Ray workers call, so the parent's choice reaches them.
MALLOC_ENV = "SPACY_SOFTPROMPT_MALLOC"
MALLOC_SETTINGS = ("retain", "default")
#: Blocks up to this size come from the heap; the heap is trimmed only when this much is free at its top.
RETAINED_BYTES = 1 << 30

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_retained = False


def malloc_is_glibc() -> bool:
    """Whether this process's ``malloc`` is glibc's (the only one whose ``mallopt`` this module sets)."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def retain_freed_memory(limit: int = RETAINED_BYTES) -> bool:
    """Serve blocks up to ``limit`` bytes from the heap and keep freed ones (glibc ``mallopt``).

    Returns whether the setting is in force (``False`` where malloc is not glibc's).
    Process-wide and not undone; call it once, before the pipeline runs.
    """
    global _retained
    if _retained:
        return True
    if not malloc_is_glibc():
        return False
    if not 0 < limit < 2**31:
        raise ValueError(f"limit {limit}: must be between 1 and 2**31 - 1 bytes (mallopt takes an int)")
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # both are needed: the mmap threshold keeps large blocks on the heap, the trim threshold keeps
    # the heap from being handed back to the kernel when they are freed
    _retained = bool(mallopt(_M_TRIM_THRESHOLD, limit)) and bool(mallopt(_M_MMAP_THRESHOLD, limit))
    return _retained


def memory_is_retained() -> bool:
    """Whether :func:`retain_freed_memory` is in force in this process."""
    return _retained


def apply_malloc_setting(setting: Optional[str] = None) -> bool:
    """``retain``: :func:`retain_freed_memory`; ``default``: leave malloc alone. ``None`` reads
    :data:`MALLOC_ENV` (unset: ``default``, so importing or loading changes nothing by itself).
    Returns whether freed memory is retained."""
    setting = (setting if setting is not None else os.environ.get(MALLOC_ENV, "default")).strip().lower()
    if setting not in MALLOC_SETTINGS:
        raise ValueError(f"malloc setting {setting!r}: use one of {', '.join(MALLOC_SETTINGS)} ({MALLOC_ENV})")
    if setting == "retain":
        return retain_freed_memory()
    return _retained
