"""BILUO tags of the token-classification concept head and their constrained decoding.

Tag ids: ``0`` is ``O``; label ``k`` (0-based) owns ``1 + 4k + {0: B, 1: I, 2: L, 3: U}``.
A valid sequence starts with ``O``/``B``/``U``, ends with ``O``/``L``/``U``, and
``B-X``/``I-X`` are always followed by ``I-X``/``L-X`` (anything else by
``O``/``B``/``U``).

Decoding is a Viterbi search restricted to those transitions, done with array
operations over the whole (padded) batch on the scores' device (numpy or
cupy through ``xp``): one step per token *position*, each step covering every
Doc and every tag pair, with no host round trip until the spans come out.
"""
from typing import List, Sequence, Tuple

import numpy

N_PARTS = 4
B, I, L, U = range(N_PARTS)
_NEG = -1e9


def n_tags(n_labels: int) -> int:
    return 1 + N_PARTS * n_labels


def tag_names(labels: Sequence[str]) -> List[str]:
    """Tag strings in id order (``O``, ``B-X``, ``I-X``, ``L-X``, ``U-X``, ...)."""
    return ["O"] + [f"{part}-{label}" for label in labels for part in "BILU"]


def transition_constraints(n_labels: int) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """``(allowed[K, K], start_ok[K], end_ok[K])`` booleans for ``K = n_tags(n_labels)``;
    ``allowed[i, j]``: tag ``j`` may follow tag ``i``."""
    K = n_tags(n_labels)
    part = numpy.full(K, -1)
    part[1:] = numpy.arange(K - 1) % N_PARTS
    label = numpy.full(K, -1)
    label[1:] = numpy.arange(K - 1) // N_PARTS
    opens = (part == B) | (part == I)  # an entity continues after these
    continues = (part == I) | (part == L)
    same_label = label[:, None] == label[None, :]
    allowed = numpy.where(opens[:, None], continues[None, :] & same_label, ~continues[None, :])
    start_ok = ~continues
    end_ok = ~opens
    return allowed, start_ok, end_ok


def viterbi(scores, lengths, allowed, start_ok, end_ok, xp=numpy):
    """Best valid tag path per row.

    scores: ``[N, T, K]`` float array (padding beyond each length is ignored);
    lengths: ``[N]`` ints; allowed/start_ok/end_ok: from
    :func:`transition_constraints`. Returns ``[N, T]`` int32 tag ids (positions
    past a row's length repeat its last tag)."""
    N, T, K = scores.shape
    paths = xp.zeros((N, T), dtype="int32")
    if N == 0 or T == 0:
        return paths
    scores = scores.astype("float32", copy=False)
    lengths = xp.asarray(lengths, dtype="int32")
    trans = xp.asarray(numpy.where(allowed, 0.0, _NEG).astype("float32"))
    start_pen = xp.asarray(numpy.where(start_ok, 0.0, _NEG).astype("float32"))
    end_pen = xp.asarray(numpy.where(end_ok, 0.0, _NEG).astype("float32"))
    keep = xp.broadcast_to(xp.arange(K, dtype="int32")[None, :], (N, K))
    back = xp.empty((T, N, K), dtype="int32")
    delta = scores[:, 0] + start_pen[None, :]
    for t in range(1, T):
        cand = delta[:, :, None] + trans[None, :, :]  # [N, prev, next]
        best_prev = cand.argmax(axis=1).astype("int32")
        new = cand.max(axis=1) + scores[:, t]
        active = (lengths > t)[:, None]
        delta = xp.where(active, new, delta)
        back[t] = xp.where(active, best_prev, keep)
    last = (delta + end_pen[None, :]).argmax(axis=1).astype("int32")
    rows = xp.arange(N)
    paths[:, T - 1] = last
    for t in range(T - 1, 0, -1):
        last = back[t][rows, last]
        paths[:, t - 1] = last
    return paths


def path_spans(paths, lengths, xp=numpy) -> numpy.ndarray:
    """``[n, 4]`` numpy int array of ``(row, start, end, label)`` entities of valid
    paths (``end`` exclusive), sorted by row then start."""
    N, T = paths.shape
    lengths = xp.asarray(lengths, dtype="int32")
    inside = xp.arange(T)[None, :] < lengths[:, None]
    part = (paths - 1) % N_PARTS
    tagged = (paths > 0) & inside
    rows, starts = xp.nonzero(tagged & ((part == B) | (part == U)))
    _, ends = xp.nonzero(tagged & ((part == L) | (part == U)))
    labels = (paths[rows, starts] - 1) // N_PARTS
    out = xp.stack([rows, starts, ends + 1, labels], axis=1) if len(rows) else xp.zeros((0, 4), dtype="int64")
    if hasattr(out, "get"):  # cupy: one transfer for the whole batch
        out = out.get()
    return numpy.asarray(out, dtype="int64").reshape(-1, 4)


def is_valid_path(tags: Sequence[int], n_labels: int) -> bool:
    """Whether a tag id sequence obeys the BILUO constraints (for tests and checks)."""
    allowed, start_ok, end_ok = transition_constraints(n_labels)
    if len(tags) == 0:
        return True
    if not start_ok[tags[0]] or not end_ok[tags[-1]]:
        return False
    return all(allowed[a, b] for a, b in zip(tags[:-1], tags[1:]))
