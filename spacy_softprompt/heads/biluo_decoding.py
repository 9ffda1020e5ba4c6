"""BILUO tags of the token-classification concept head and their constrained decoding.

Tag ids: ``0`` is ``O``; label ``k`` (0-based) owns ``1 + 4k + {0: B, 1: I, 2: L, 3: U}``.
A valid sequence starts with ``O``/``B``/``U``, ends with ``O``/``L``/``U``, and
``B-X``/``I-X`` are always followed by ``I-X``/``L-X`` (anything else by
``O``/``B``/``U``).

Decoding is a Viterbi search restricted to those transitions, done on the
host with numpy over the whole batch laid end to end: one step per token
*position*, a few small array operations over the rows still running,
covering every Doc of the batch (:func:`viterbi_flat`). :func:`decode` runs
it only where the per-token argmax is in doubt.
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
    """Best valid BILUO tag path per row of a padded batch.

    scores: ``[N, T, K]`` float array (``K = n_tags(n_labels)``; padding beyond
    each length is ignored; numpy, or cupy through ``xp``); lengths: ``[N]``
    ints. Returns ``[N, T]`` int32 tag ids (``O`` past a row's length). The
    search runs on the host over the rows laid end to end (:func:`viterbi_flat`)."""
    N, T, K = scores.shape
    host_lengths = numpy.asarray(lengths.get() if hasattr(lengths, "get") else lengths, dtype="int64").reshape(N)
    host_lengths = numpy.clip(host_lengths, 0, T)
    host_scores = scores.get() if hasattr(scores, "get") else numpy.asarray(scores)
    rows = numpy.repeat(numpy.arange(N), host_lengths)
    columns = numpy.arange(rows.shape[0]) - numpy.repeat(numpy.cumsum(host_lengths) - host_lengths, host_lengths)
    out = numpy.zeros((N, T), dtype="int32")
    out[rows, columns] = viterbi_flat(host_scores[rows, columns], host_lengths)
    return xp.asarray(out)


def viterbi_flat(scores: numpy.ndarray, lengths) -> numpy.ndarray:
    """Best valid BILUO tag path per row, for rows laid end to end (host numpy):
    ``scores`` ``[sum(lengths), K]`` -> ``[sum(lengths)]`` int32 tag ids.

    A valid path is a walk over ``1 + n_labels`` states: *closed* (no entity
    open after the token) or *inside label x* (after ``B-x``/``I-x``). Each
    step's tag follows from the state change (closed -> closed: ``O`` or the
    best ``U-x``; closed -> x: ``B-x``; x -> x: ``I-x``; x -> closed: ``L-x``);
    paths start and end closed.  Only those transitions are scored: the
    closed state is reached from any state (one ``[rows, S]`` sum and argmax)
    and inside-x only from closed or from inside-x (two ``[rows, n_labels]``
    sums), so a step costs a few small array operations and no
    ``[rows, S, S]`` table.  Ties go to the lowest previous state, as an
    argmax over all states would.

    The tokens are put in *time-major* order once (position 0 of every row,
    longest row first, then position 1 of the rows that long, ...), so the
    rows still running at a position are one contiguous slice and no work is
    spent on padding: a batch of many short pieces (what :func:`decode`
    passes) costs its tokens, not rows x longest piece."""
    scores = numpy.asarray(scores, dtype="float32")
    lengths = numpy.asarray(lengths, dtype="int64").reshape(-1)
    total, K = scores.shape
    n_labels = (K - 1) // N_PARTS
    S = 1 + n_labels
    if total != int(lengths.sum()):
        raise ValueError(f"{total} rows of scores for lengths summing to {int(lengths.sum())}")
    if total == 0:
        return numpy.zeros((0,), dtype="int32")
    N, T = lengths.shape[0], int(lengths.max())
    order = numpy.argsort(-lengths, kind="stable")  # longest first: the rows running at t are a prefix
    running = N - numpy.cumsum(numpy.bincount(lengths, minlength=T + 1))[:T]  # rows longer than t
    offsets = numpy.concatenate([[0], numpy.cumsum(running)])  # position t's slice of the time-major order
    row_start = (numpy.cumsum(lengths) - lengths)[order]
    position = numpy.repeat(numpy.arange(T), running)
    rank = numpy.arange(total) - offsets[position]  # the row's rank (longest first) at its position
    time_major = row_start[rank] + position  # flat index of each time-major token
    by_time = scores[time_major]
    parts = by_time[:, 1:].reshape(total, n_labels, N_PARTS)
    outside = by_time[:, 0]
    best_unit = parts[..., U].argmax(axis=1)  # closed -> closed: O, or the best U-x (O wins ties)
    unit_score = numpy.take_along_axis(parts[..., U], best_unit[:, None], axis=1)[:, 0]
    stay_tag = numpy.where(unit_score > outside, 1 + N_PARTS * best_unit + U, 0)
    to_closed = numpy.empty((total, S), dtype="float32")  # score of being closed after t, per state before
    to_closed[:, 0] = numpy.maximum(outside, unit_score)
    to_closed[:, 1:] = parts[..., L]
    opening = numpy.ascontiguousarray(parts[..., B])
    continuing = numpy.ascontiguousarray(parts[..., I])
    state = numpy.full((N, S), _NEG, dtype="float32")
    state[:, 0] = 0.0
    closed_from = numpy.zeros(total, dtype="int32")  # state before t of the best path closed after t
    continued = numpy.zeros((total, n_labels), dtype=bool)  # inside-x after t came from inside-x (else closed)
    for t in range(T):
        k, here = int(running[t]), slice(int(offsets[t]), int(offsets[t + 1]))
        now = state[:k]
        closing = now + to_closed[here]
        closed_from[here] = closing.argmax(axis=1)
        from_closed = now[:, :1] + opening[here]
        from_inside = now[:, 1:] + continuing[here]
        numpy.greater(from_inside, from_closed, out=continued[here])
        closing.max(axis=1, out=now[:, 0])  # the value at the argmax
        numpy.maximum(from_closed, from_inside, out=now[:, 1:])
    back = numpy.empty((total, S), dtype="int32")  # back[token, state after it] = state before it
    back[:, 0] = closed_from
    back[:, 1:] = continued * numpy.arange(1, S, dtype="int32")
    before = numpy.empty(total, dtype="int32")
    after = numpy.empty(total, dtype="int32")
    z = numpy.zeros(N, dtype="int32")  # paths end closed
    for t in range(T - 1, -1, -1):
        k, lo = int(running[t]), int(offsets[t])
        after[lo : lo + k] = z[:k]
        z[:k] = back[lo : lo + k][numpy.arange(k), z[:k]]
        before[lo : lo + k] = z[:k]
    label_of = numpy.maximum(before, after) - 1
    part = numpy.where(before == 0, numpy.where(after == 0, U, B), numpy.where(after == 0, L, I))
    tags = numpy.where((before == 0) & (after == 0), stay_tag, 1 + N_PARTS * label_of + part)
    out = numpy.empty(total, dtype="int32")
    out[time_major] = tags
    return out


#: Float slack of :func:`decode`, as a share of a row's summed score magnitudes: a
#: margin counts only when it beats its bound by that much (rounding of the Viterbi's sums).
SETTLED_SLACK = 1e-4
#: :func:`decode` runs the Viterbi on the whole batch when its longest doubtful piece is
#: longer than this share of the batch's longest row (cutting would save little).
PIECE_SHARE = 0.5


def decode(scores: numpy.ndarray, lengths) -> numpy.ndarray:
    """The tags :func:`viterbi` gives, for a batch laid end to end (host numpy
    arrays): ``scores`` ``[sum(lengths), K]``, rows one after the other; returns
    ``[sum(lengths)]`` int32 tag ids. The Viterbi runs only over the pieces of
    the rows where the per-token argmax is in doubt.

    **Settled O.** Take a token ``t`` whose best tag is ``O`` by a margin ``m``.
    If the best valid path tagged it otherwise, ``t`` would lie in one of that
    path's entities; setting the entity's tokens to ``O`` gives a valid path,
    and it must not score higher. Against ``O``, the entity loses at least
    ``m`` at ``t``, at most gains ``best − O`` at a token whose argmax is not
    ``O``, and loses at least that token's margin at any other token. So when
    ``m`` beats the best such gain over the stretches ending next to ``t`` on
    either side (two running-sum bounds, computed with cumulative sums), the
    best valid path has ``O`` at ``t``. Likewise when ``m`` beats what
    splitting the entity at ``t`` could cost at its two neighbours (``B-x`` or
    ``I-x`` before ``t`` becoming ``U-x`` or ``L-x``, ``I-x`` or ``L-x`` after
    it becoming ``B-x`` or ``U-x``).

    **Pieces.** Settled ``O`` tokens close whatever comes before them and open
    nothing, so they cut a row into pieces that decode independently. A piece
    whose argmax tags are a valid sequence with a clear lead at every token is
    its own best path; the others go through :func:`viterbi` as the rows of one
    short batch. The result equals :func:`viterbi`'s: the same comparisons,
    shifted by a constant; :data:`SETTLED_SLACK` keeps float rounding out of
    the bounds."""
    scores = numpy.asarray(scores, dtype="float32")
    lengths = numpy.asarray(lengths, dtype="int64").reshape(-1)
    total, K = scores.shape
    N, n_labels = lengths.shape[0], (K - 1) // N_PARTS
    if total != int(lengths.sum()):
        raise ValueError(f"{total} rows of scores for lengths summing to {int(lengths.sum())}")
    if total == 0 or n_labels == 0:  # nothing to tag, or only O
        return numpy.zeros((total,), dtype="int32")
    by_tag = numpy.ascontiguousarray(scores.T)  # [K, total]: reductions over tags run along rows
    outside = by_tag[0]
    tagged_best = by_tag[1:].max(axis=0)
    is_o = outside >= tagged_best  # argmax: O wins ties
    best = numpy.zeros(total, dtype="int32")
    entity = numpy.flatnonzero(~is_o)
    best[entity] = scores[entity, 1:].argmax(axis=1) + 1
    lead = outside.astype("float64") - tagged_best  # O's lead (> 0) or deficit
    row = numpy.repeat(numpy.arange(N), lengths)
    magnitude = numpy.maximum(by_tag.max(axis=0), -by_tag.min(axis=0))
    slack = SETTLED_SLACK * numpy.bincount(row, weights=magnitude, minlength=N)[row]
    # the rows on one line with a separator after each (never in a piece; an O for the transitions)
    E = total + N
    at = numpy.arange(total) + row  # each token's place on that line
    row_at = numpy.repeat(numpy.arange(N), lengths + 1)
    gain = numpy.zeros(E)  # what an entity gains against O: best - O where that is not O, -margin where it is
    gain[at] = -lead
    # running sums with every row shifted far below the ones before it, so the minimum of the
    # sums before t and the maximum of the sums after t stay inside t's row
    running = numpy.zeros(E + 1)
    numpy.cumsum(gain, out=running[1:])
    running -= numpy.append(row_at, N - 1) * (2.0 * (numpy.abs(gain).sum() + 1.0))
    before = running[at] - numpy.minimum.accumulate(running)[at]  # best stretch ending at t - 1
    after = numpy.maximum.accumulate(running[::-1])[::-1][at + 1] - running[at + 1]  # from t + 1
    # or: split the entity at t (B-x / I-x before t -> U-x / L-x, I-x / L-x after it -> B-x / U-x)
    ending, starting = numpy.zeros(E + 2), numpy.zeros(E + 2)  # one O place before and after the line
    part = {k: by_tag[1 + k :: N_PARTS] for k in (B, I, L, U)}  # [labels, total] each
    ending[at + 1] = numpy.maximum(part[B] - part[U], part[I] - part[L]).max(axis=0)
    starting[at + 1] = numpy.maximum(part[I] - part[B], part[L] - part[U]).max(axis=0)
    split = numpy.maximum(ending[at], 0.0) + numpy.maximum(starting[at + 2], 0.0)
    cut = numpy.zeros(E, dtype=bool)
    cut[at] = is_o & (lead > numpy.minimum(before + after, split) + slack)
    # pieces: maximal runs of uncut tokens on the line
    piece = numpy.zeros(E, dtype=bool)
    piece[at] = True
    piece &= ~cut
    edges = numpy.diff(piece.astype("int8"), prepend=0, append=0)
    starts, ends = numpy.flatnonzero(edges == 1), numpy.flatnonzero(edges == -1)
    if not len(starts):
        return best
    # a piece keeps its argmax when every step (into it, within it, out of it) is allowed ...
    allowed, _, _ = transition_constraints(n_labels)
    line = numpy.zeros(E + 1, dtype="int32")  # an O before the line, separators O
    line[at + 1] = best
    broken_before = numpy.concatenate([[0], numpy.cumsum(~allowed[line[:-1], line[1:]])])
    doubtful = broken_before[ends + 1] > broken_before[starts]
    sizes = ends - starts
    longest = int(lengths.max())
    if doubtful.any() and int(sizes[doubtful].max()) > PIECE_SHARE * longest:
        return viterbi_flat(scores, lengths)
    # ... and every token's best tag leads its runner-up (checked in the pieces not in doubt yet)
    piece_of = numpy.repeat(numpy.arange(len(starts)), sizes)
    within = numpy.arange(int(sizes.sum())) - numpy.repeat(numpy.cumsum(sizes) - sizes, sizes)
    token = numpy.repeat(starts, sizes) + within
    token -= row_at[token]  # from the line back to the batch
    clear = ~doubtful[piece_of]
    top = numpy.partition(scores[token[clear]], K - 2, axis=1)
    unclear = (top[:, K - 1].astype("float64") - top[:, K - 2]) <= slack[token[clear]]
    doubtful |= numpy.bincount(piece_of[clear], weights=unclear, minlength=len(starts)) > 0
    if not doubtful.any():
        return best
    if int(sizes[doubtful].max()) > PIECE_SHARE * longest:
        return viterbi_flat(scores, lengths)
    token = token[doubtful[piece_of]]  # the doubtful pieces' tokens, piece after piece
    best[token] = viterbi_flat(scores[token], sizes[doubtful])
    return best


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
