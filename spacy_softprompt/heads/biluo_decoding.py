"""BILUO tags of the token-classification concept head and their constrained decoding.

Tag ids: ``0`` is ``O``; label ``k`` (0-based) owns ``1 + 4k + {0: B, 1: I, 2: L, 3: U}``.
A valid sequence starts with ``O``/``B``/``U``, ends with ``O``/``L``/``U``, and
``B-X``/``I-X`` are always followed by ``I-X``/``L-X`` (anything else by
``O``/``B``/``U``).

Decoding is a Viterbi search restricted to those transitions, done with array
operations over the whole (padded) batch (numpy, or cupy through ``xp``;
``token_ner`` decodes on the host): one step per token *position*, a few
small array operations over the rows still running, covering every Doc of
the batch.
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
    ``allowed[i, j]``: tag ``j`` may follow tag ``i``. The reference definition
    (:func:`is_valid_path`, tests); :func:`viterbi` encodes the same rules as states."""
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


def viterbi(scores, lengths, xp=numpy):
    """Best valid BILUO tag path per row.

    scores: ``[N, T, K]`` float array (``K = n_tags(n_labels)``; padding beyond
    each length is ignored); lengths: ``[N]`` ints. Returns ``[N, T]`` int32 tag
    ids (``O`` past a row's length).

    A valid path is a walk over ``1 + n_labels`` states: *closed* (no entity
    open after the token) or *inside label x* (after ``B-x``/``I-x``). Each
    step's tag follows from the state change (closed -> closed: ``O`` or the
    best ``U-x``; closed -> x: ``B-x``; x -> x: ``I-x``; x -> closed: ``L-x``);
    paths start and end closed.  Only those transitions are scored: the
    closed state is reached from any state (one ``[rows, S]`` sum and argmax)
    and inside-x only from closed or from inside-x (two ``[rows, n_labels]``
    sums), so a step costs a few small array operations and no
    ``[rows, S, S]`` table.  Rows run longest first and a step covers only the
    rows still inside their length.  Ties go to the lowest previous state, as
    an argmax over all states would."""
    N, T, K = scores.shape
    n_labels = (K - 1) // N_PARTS
    S = 1 + n_labels
    if N == 0 or T == 0:
        return xp.zeros((N, T), dtype="int32")
    host_lengths = numpy.asarray(lengths.get() if hasattr(lengths, "get") else lengths, dtype="int64").reshape(N)
    host_lengths = numpy.clip(host_lengths, 0, T)
    order = numpy.argsort(-host_lengths, kind="stable")  # longest first: the rows running at t are a prefix
    running = N - numpy.cumsum(numpy.bincount(host_lengths, minlength=T + 1))[:T]
    by_time = scores.astype("float32", copy=False)[xp.asarray(order)].transpose(1, 0, 2)  # [T, N, K] view
    parts = by_time[:, :, 1:].reshape(T, N, n_labels, N_PARTS)
    outside = by_time[:, :, 0]
    best_unit = parts[..., U].argmax(axis=2)  # closed -> closed: O, or the best U-x (O wins ties)
    unit_score = xp.take_along_axis(parts[..., U], best_unit[..., None], axis=2)[..., 0]
    stay_arg = xp.where(unit_score > outside, best_unit + 1, 0)  # 0: O, x + 1: U-x
    to_closed = xp.empty((T, N, S), dtype="float32")  # score of being closed after t, per state before
    to_closed[:, :, 0] = xp.maximum(outside, unit_score)
    to_closed[:, :, 1:] = parts[..., L]
    opening, continuing = parts[..., B], parts[..., I]
    state = xp.full((N, S), _NEG, dtype="float32")
    state[:, 0] = 0.0
    closed_from = xp.zeros((T, N), dtype="int32")  # state before t of the best path closed after t
    continued = xp.zeros((T, N, n_labels), dtype=bool)  # inside-x after t came from inside-x (else closed)
    rows = xp.arange(N)
    for t in range(T):
        k = int(running[t])
        if k == 0:
            break
        now = state[:k]
        closing = now + to_closed[t, :k]
        best = closing.argmax(axis=1)
        closed_from[t, :k] = best
        from_closed = now[:, :1] + opening[t, :k]
        from_inside = now[:, 1:] + continuing[t, :k]
        xp.greater(from_inside, from_closed, out=continued[t, :k])
        closing.max(axis=1, out=now[:, 0])  # the value at ``best``
        xp.maximum(from_closed, from_inside, out=now[:, 1:])
    back = xp.empty((T, N, S), dtype="int32")  # back[t, row, state after t] = state before t
    back[:, :, 0] = closed_from
    back[:, :, 1:] = continued * xp.arange(1, S, dtype="int32")
    back = back.reshape(T, N * S)
    row_offsets = rows * S
    states = xp.zeros((T + 1, N), dtype="int32")  # states[t]: before token t; paths end closed
    z = states[T]
    for t in range(T - 1, -1, -1):
        z = back[t][row_offsets + z]
        states[t] = z
    before, after = states[:T].T, states[1:].T
    label_of = xp.maximum(before, after) - 1
    part = xp.where(before == 0, xp.where(after == 0, U, B), xp.where(after == 0, L, I))
    tags = 1 + N_PARTS * label_of + part
    stay_arg = stay_arg.T
    stay_tag = xp.where(stay_arg == 0, 0, 1 + N_PARTS * (stay_arg - 1) + U)
    tags = xp.where((before == 0) & (after == 0), stay_tag, tags)
    padding = numpy.arange(T)[None, :] >= host_lengths[order][:, None]
    tags = xp.where(xp.asarray(padding), 0, tags).astype("int32")
    out = xp.empty_like(tags)
    out[xp.asarray(order)] = tags
    return out


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
