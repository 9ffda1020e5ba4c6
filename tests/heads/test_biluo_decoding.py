"""Constrained BILUO decoding: always valid, optimal among valid paths, spans read back right."""
import itertools

import numpy
from hypothesis import given, settings, strategies as st

from spacy_softprompt.heads.biluo_decoding import (
    is_valid_path,
    n_tags,
    path_spans,
    tag_names,
    transition_constraints,
    viterbi,
)


def _decode(scores, lengths, n_labels):
    assert scores.shape[2] == n_tags(n_labels)
    return viterbi(scores, numpy.asarray(lengths))


def test_tag_layout():
    assert tag_names(["Drug", "Dose"]) == ["O", "B-Drug", "I-Drug", "L-Drug", "U-Drug", "B-Dose", "I-Dose", "L-Dose", "U-Dose"]
    allowed, start_ok, end_ok = transition_constraints(2)
    names = tag_names(["Drug", "Dose"])
    ok = {(names[i], names[j]) for i, j in zip(*numpy.nonzero(allowed))}
    assert ("B-Drug", "L-Drug") in ok and ("I-Drug", "I-Drug") in ok and ("L-Drug", "B-Dose") in ok
    assert ("B-Drug", "L-Dose") not in ok and ("B-Drug", "O") not in ok and ("O", "I-Drug") not in ok
    assert [names[i] for i in numpy.flatnonzero(~start_ok)] == ["I-Drug", "L-Drug", "I-Dose", "L-Dose"]
    assert [names[i] for i in numpy.flatnonzero(~end_ok)] == ["B-Drug", "I-Drug", "B-Dose", "I-Dose"]


@settings(max_examples=200, deadline=None)
@given(
    n_labels=st.integers(1, 3),
    lengths=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 1.0, 100.0]),
)
def test_decoding_never_yields_invalid_sequences(n_labels, lengths, seed, scale):
    rng = numpy.random.RandomState(seed)
    T = max(lengths)
    scores = (rng.normal(size=(len(lengths), T, n_tags(n_labels))) * scale).astype("f")
    # reward invalid tags heavily at random: the constraints must still win
    scores[..., 2::4] += rng.uniform(0, 3 * scale, size=scores[..., 2::4].shape).astype("f")
    paths = _decode(scores, lengths, n_labels)
    for row, n in enumerate(lengths):
        assert is_valid_path(paths[row, :n].tolist(), n_labels), paths[row, :n]
    spans = path_spans(paths, numpy.asarray(lengths))
    for row, start, end, label in spans:
        assert 0 <= start < end <= lengths[row] and 0 <= label < n_labels


@settings(max_examples=60, deadline=None)
@given(n_labels=st.integers(1, 2), length=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_decoding_finds_the_best_valid_path(n_labels, length, seed):
    K = n_tags(n_labels)
    scores = numpy.random.RandomState(seed).normal(size=(1, length + 2, K)).astype("f")  # 2 padding positions
    path = _decode(scores, [length], n_labels)[0, :length].tolist()
    best = max(
        (p for p in itertools.product(range(K), repeat=length) if is_valid_path(p, n_labels)),
        key=lambda p: sum(scores[0, t, tag] for t, tag in enumerate(p)),
    )
    total = lambda p: float(sum(scores[0, t, tag] for t, tag in enumerate(p)))  # noqa: E731
    assert total(path) == total(best)


def test_path_spans_reads_entities_of_each_row():
    # labels: 0 = A, 1 = B; ids: O=0, B-A=1, I-A=2, L-A=3, U-A=4, B-B=5, I-B=6, L-B=7, U-B=8
    paths = numpy.asarray([[1, 2, 3, 0, 8, 8], [4, 0, 5, 7, 7, 7]], dtype="int32")
    spans = path_spans(paths, numpy.asarray([6, 4]))  # row 1 past its length repeats L-B: ignored
    assert spans.tolist() == [[0, 0, 3, 0], [0, 4, 5, 1], [0, 5, 6, 1], [1, 0, 1, 0], [1, 2, 4, 1]]


def test_empty_batch_and_empty_rows():
    assert _decode(numpy.zeros((0, 0, 5), "f"), [], 1).shape == (0, 0)
    scores = numpy.zeros((2, 3, 5), "f")
    scores[:, :, 4] = 1.0  # U-A everywhere, the empty row included
    spans = path_spans(_decode(scores, [0, 3], 1), numpy.asarray([0, 3]))
    assert spans.tolist() == [[1, 0, 1, 0], [1, 1, 2, 0], [1, 2, 3, 0]]
