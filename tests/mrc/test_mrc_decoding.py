"""MRC decoding and losses on hand-built logits (pure torch, no model)."""
import numpy
import pytest
import torch

from spacy_softprompt.mrc.decoding import (
    decode_spans,
    dense_match_fn,
    logit,
    pair_candidates,
    span_end_limit,
    span_losses,
    spans_to_tokens,
)
from spacy_softprompt.mrc.rows import token_windows, window_owners

HIGH, LOW = 8.0, -8.0


def _row(word_index):
    """Masks of one row from its per-position token index (-1 = not context)."""
    wi = torch.tensor([word_index])
    prev = torch.cat([torch.full((1, 1), -2), wi[:, :-1]], 1)
    nxt = torch.cat([wi[:, 1:], torch.full((1, 1), -2)], 1)
    ctx = wi >= 0
    return wi, ctx & (prev != wi), ctx & (nxt != wi)


# [CLS] q q [SEP] tok0 tok1(2 pieces) tok2 tok3(3 pieces) tok4 [SEP] [PAD]
WORDS = [-1, -1, -1, -1, 0, 1, 1, 2, 3, 3, 3, 4, -1, -1]


def test_masks_mark_first_and_last_pieces_only():
    wi, start_mask, end_mask = _row(WORDS)
    assert start_mask[0].nonzero().flatten().tolist() == [4, 5, 7, 8, 11]
    assert end_mask[0].nonzero().flatten().tolist() == [4, 6, 7, 10, 11]


def test_spans_never_start_or_end_inside_a_word():
    wi, start_mask, end_mask = _row(WORDS)
    L = wi.shape[1]
    # every position looks like a start, an end, and every pair matches
    start = torch.full((1, L), HIGH)
    end = torch.full((1, L), HIGH)
    match = torch.full((1, L, L), HIGH)
    pairs, probs = decode_spans(start, end, dense_match_fn(match), start_mask, end_mask, wi, max_span_width=10)
    assert len(pairs) == 15  # 5 tokens: 5 + 4 + 3 + 2 + 1 spans
    assert bool(start_mask[0, pairs[:, 1]].all()) and bool(end_mask[0, pairs[:, 2]].all())
    tokens = spans_to_tokens(pairs, wi)
    assert sorted(map(tuple, tokens[:, 1:].tolist())) == sorted((s, e) for s in range(5) for e in range(s + 1, 6))
    assert torch.all(probs > 0.99)


def test_nested_spans_of_one_label_decode():
    wi, start_mask, end_mask = _row(WORDS)
    L = wi.shape[1]
    start = torch.full((1, L), LOW)
    end = torch.full((1, L), LOW)
    match = torch.full((1, L, L), LOW)
    # outer span tok1..tok3 (positions 5..10) and nested tok1 (5..6) and tok3 (8..10)
    start[0, [5, 8]] = HIGH
    end[0, [6, 10]] = HIGH
    for i, j in [(5, 10), (5, 6), (8, 10)]:
        match[0, i, j] = HIGH
    pairs, _ = decode_spans(start, end, dense_match_fn(match), start_mask, end_mask, wi, max_span_width=10)
    tokens = sorted(map(tuple, spans_to_tokens(pairs, wi)[:, 1:].tolist()))
    assert tokens == [(1, 2), (1, 4), (3, 4)]


def test_match_threshold_and_width_limit():
    wi, start_mask, end_mask = _row(WORDS)
    L = wi.shape[1]
    start = torch.full((1, L), LOW)
    end = torch.full((1, L), LOW)
    start[0, 4] = HIGH
    end[0, [4, 11]] = HIGH
    match = torch.full((1, L, L), HIGH)
    match[0, 4, 4] = LOW
    pairs, _ = decode_spans(start, end, dense_match_fn(match), start_mask, end_mask, wi, max_span_width=10)
    assert spans_to_tokens(pairs, wi)[:, 1:].tolist() == [[0, 5]]
    pairs, _ = decode_spans(start, end, dense_match_fn(match), start_mask, end_mask, wi, max_span_width=4)
    assert len(pairs) == 0  # tok0..tok4 is 5 tokens wide


def test_span_end_limit_counts_tokens_not_pieces():
    wi, _, _ = _row(WORDS)
    limit = span_end_limit(wi, 2)
    assert limit[0, 4] == 6  # tok0 + tok1 (two pieces)
    assert limit[0, 5] == 7  # tok1 + tok2
    assert limit[0, 8] == 11  # tok3 + tok4


def test_batched_rows_decode_independently():
    wi, start_mask, end_mask = _row(WORDS)
    R, L = 3, wi.shape[1]
    wi, start_mask, end_mask = wi.repeat(R, 1), start_mask.repeat(R, 1), end_mask.repeat(R, 1)
    start = torch.full((R, L), LOW)
    end = torch.full((R, L), LOW)
    start[1, 7] = HIGH
    end[1, 7] = HIGH
    start[2, 4] = HIGH
    end[2, 10] = HIGH
    match = torch.full((R, L, L), HIGH)
    pairs, _ = decode_spans(start, end, dense_match_fn(match), start_mask, end_mask, wi, max_span_width=10)
    assert sorted(map(tuple, spans_to_tokens(pairs, wi).tolist())) == [(1, 2, 3), (2, 0, 4)]


def test_candidates_are_pairs_with_end_after_start():
    wi, start_mask, end_mask = _row(WORDS)
    pairs = pair_candidates(start_mask, end_mask, wi, 3)
    assert bool((pairs[:, 2] >= pairs[:, 1]).all())
    widths = wi[0, pairs[:, 2]] - wi[0, pairs[:, 1]] + 1
    assert int(widths.max()) == 3 and int(widths.min()) == 1


def test_losses_are_small_for_perfect_logits_and_large_for_wrong_ones():
    wi, start_mask, end_mask = _row(WORDS)
    L = wi.shape[1]
    gold = torch.tensor([[0, 5, 10], [0, 8, 10]])
    start = torch.full((1, L), LOW)
    end = torch.full((1, L), LOW)
    start[0, [5, 8]] = HIGH
    end[0, 10] = HIGH
    match = torch.full((1, L, L), LOW)
    match[0, 5, 10] = HIGH
    match[0, 8, 10] = HIGH
    good = span_losses(start, end, dense_match_fn(match), start_mask, end_mask, wi, gold, 10)
    assert all(float(good[k]) < 1e-3 for k in ("start", "end", "match"))
    assert int(good["n_match"]) == 2
    bad = span_losses(-start, -end, dense_match_fn(-match), start_mask, end_mask, wi, gold, 10)
    assert all(float(bad[k]) > 1.0 for k in ("start", "end", "match"))


def test_losses_backpropagate_to_every_head():
    wi, start_mask, end_mask = _row(WORDS)
    L = wi.shape[1]
    start = torch.zeros((1, L), requires_grad=True)
    end = torch.zeros((1, L), requires_grad=True)
    match = torch.zeros((1, L, L), requires_grad=True)
    gold = torch.tensor([[0, 5, 10]])
    losses = span_losses(start, end, dense_match_fn(match), start_mask, end_mask, wi, gold, 10)
    (losses["start"] + losses["end"] + losses["match"]).backward()
    assert start.grad[0, 5] < 0 and end.grad[0, 10] < 0 and match.grad[0, 5, 10] < 0
    assert float(start.grad[0, :4].abs().sum()) == 0.0  # query positions get nothing


def test_match_candidates_are_capped_keeping_every_gold_pair():
    wi, start_mask, end_mask = _row(WORDS)
    L = wi.shape[1]
    gold = torch.tensor([[0, 5, 10], [0, 8, 10]])
    start, end = torch.full((1, L), HIGH), torch.full((1, L), HIGH)  # every position a candidate
    seen = []

    def match_fn(rows, starts, ends):
        seen.append(torch.stack([rows, starts, ends], 1))
        return torch.zeros(len(rows))

    full = span_losses(start, end, match_fn, start_mask, end_mask, wi, gold, 10)
    assert int(full["n_match"]) == 15
    capped = span_losses(start, end, match_fn, start_mask, end_mask, wi, gold, 10, max_candidates=4)
    assert len(seen[-1]) == 4
    assert {(5, 10), (8, 10)} <= {(int(i), int(j)) for _, i, j in seen[-1]}
    assert float(capped["match"]) == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(0.0))))


def test_logit_threshold():
    assert logit(0.5) == pytest.approx(0.0)
    assert logit(0.9) == pytest.approx(numpy.log(9.0))


@pytest.mark.parametrize("counts", [[1, 2, 3, 1, 1, 4, 2, 1, 1, 1], [5] * 7, [0, 1, 0, 2]])
def test_windows_cover_every_token_and_owners_partition(counts):
    counts = numpy.asarray(counts)
    windows = token_windows(counts, budget=6, overlap=2)
    covered = set()
    for a, b in windows:
        covered.update(range(a, b))
        assert counts[a:b].sum() <= 6 or b - a == 1
    assert covered == set(range(len(counts)))
    owners = window_owners(windows)
    owned = [t for lo, hi in owners for t in range(lo, hi)]
    assert owned == list(range(len(counts)))
    for (a, b), (lo, hi) in zip(windows, owners):
        assert a <= lo and hi <= b


def test_positive_weight_scales_the_gold_terms_only():
    wi, start_mask, end_mask = _row(WORDS)
    L = wi.shape[1]
    gold = torch.tensor([[0, 5, 10]])
    start = torch.zeros((1, L), requires_grad=True)
    end = torch.zeros((1, L), requires_grad=True)
    match = torch.zeros((1, L, L))
    plain = span_losses(start, end, dense_match_fn(match), start_mask, end_mask, wi, gold, 10)
    plain["start"].backward()
    plain_grad = start.grad.clone()
    start.grad = None
    weighted = span_losses(start, end, dense_match_fn(match), start_mask, end_mask, wi, gold, 10, positive_weight=4.0)
    weighted["start"].backward()
    assert float(weighted["start"]) > float(plain["start"])
    assert float(weighted["match"]) > float(plain["match"])
    assert float(start.grad[0, 5]) == pytest.approx(4.0 * float(plain_grad[0, 5]))  # the gold start
    assert float(start.grad[0, 7]) == pytest.approx(float(plain_grad[0, 7]))  # a negative start
