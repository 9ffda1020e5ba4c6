"""BILUO tags of the token-classification concept head and their constrained decoding.

Tag ids: ``0`` is ``O``; label ``k`` (0-based) owns ``1 + 4k + {0: B, 1: I, 2: L, 3: U}``.
A valid sequence starts with ``O``/``B``/``U``, ends with ``O``/``L``/``U``, and
``B-X``/``I-X`` are always followed by ``I-X``/``L-X`` (anything else by
``O``/``B``/``U``).

Decoding is a Viterbi search restricted to those transitions, done with array
operations over the whole (padded) batch on the scores' device (numpy or
cupy through ``xp``): one step per token *position* (three array operations
covering every Doc of the batch), no host round trip until the spans come out.
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
    best ``U-x``; closed -> x: ``B-x``; x -> x: ``I-x``; x -> closed: ``L-x``),
    so the search runs over ``[N, 1 + n_labels, 1 + n_labels]`` arrays (three
    operations per position, transition scores built for all positions at
    once); paths start and end closed."""
    N, T, K = scores.shape
    n_labels = (K - 1) // N_PARTS
    S = 1 + n_labels
    if N == 0 or T == 0:
        return xp.zeros((N, T), dtype="int32")
    scores = scores.astype("float32", copy=False)
    lengths = xp.asarray(lengths, dtype="int32")
    parts = scores[:, :, 1:].reshape(N, T, n_labels, N_PARTS)
    stay_cands = xp.concatenate([scores[:, :, :1], parts[..., U]], axis=2)  # O, U-x
    stay_arg = stay_cands.argmax(axis=2)
    inside = xp.arange(1, S)
    W = xp.full((N, T, S, S), _NEG, dtype="float32")  # W[n, t, state before, state after]
    W[:, :, 0, 0] = stay_cands.max(axis=2)
    W[:, :, 0, 1:] = parts[..., B]
    W[:, :, 1:, 0] = parts[..., L]
    W[:, :, inside, inside] = parts[..., I]
    padding = xp.arange(T)[None, :] >= lengths[:, None]
    identity = xp.asarray(numpy.where(numpy.eye(S, dtype=bool), 0.0, _NEG).astype("float32"))
    W = xp.where(padding[:, :, None, None], identity[None, None], W)
    state = xp.full((N, S), _NEG, dtype="float32")
    state[:, 0] = 0.0
    back = xp.empty((T, N, S), dtype="int32")
    for t in range(T):
        cand = state[:, :, None] + W[:, t]
        back[t] = cand.argmax(axis=1)
        state = cand.max(axis=1)
    states = xp.zeros((N, T + 1), dtype="int32")  # states[:, t]: before token t; paths end closed
    rows = xp.arange(N)
    z = states[:, T]
    for t in range(T - 1, -1, -1):
        z = back[t][rows, z]
        states[:, t] = z
    before, after = states[:, :T], states[:, 1:]
    label_of = xp.maximum(before, after) - 1
    part = xp.where(before == 0, xp.where(after == 0, U, B), xp.where(after == 0, L, I))
    tags = 1 + N_PARTS * label_of + part
    stay_tag = xp.where(stay_arg == 0, 0, 1 + N_PARTS * (stay_arg - 1) + U)
    tags = xp.where((before == 0) & (after == 0), stay_tag, tags)
    return xp.where(padding, 0, tags).astype("int32")


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
