"""Span candidates, decoding and losses of the MRC heads: plain torch, vectorised.

Every function works on a batch of query rows at once (``R`` rows of ``L``
wordpieces); nothing loops over rows or over (start, end) pairs in Python.

Inputs shared by the functions
------------------------------
* ``start_mask`` / ``end_mask``: ``BoolTensor[R, L]``, the context wordpieces
  that begin / end a spaCy token (first / last piece of a word).  Spans may
  only start and end there, so a span never starts or ends inside a word.
* ``word_index``: ``LongTensor[R, L]``, the token index (in its Doc) of each
  context wordpiece, ``-1`` for query, special and padding positions; it does
  not decrease along the context of a row.
* ``max_span_width``: the longest span in spaCy tokens.

A candidate pair ``(r, i, j)`` is a start position ``i`` and an end position
``j >= i`` of the same row whose tokens are at most ``max_span_width`` apart.
Nested and overlapping spans are not excluded: two pairs sharing a start (or
an end) are decoded independently, so nested entities of one type come out.
"""
from typing import Callable, Dict, Optional, Tuple

import torch
from torch.nn import functional as F

#: ``match_fn(rows, starts, ends) -> logits[N]`` scores candidate pairs.
MatchFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def logit(probability: float) -> float:
    """The logit of a probability threshold (so thresholds compare logits)."""
    p = min(max(float(probability), 1e-6), 1 - 1e-6)
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def span_end_limit(word_index: torch.Tensor, max_span_width: int) -> torch.Tensor:
    """``LongTensor[R, L]``: for each position ``i`` the last position ``j`` whose
    token is at most ``max_span_width - 1`` tokens after ``i``'s token."""
    running = torch.cummax(word_index, dim=1).values
    # positions after the context (specials, padding) sort after every token
    after = (word_index < 0) & (running >= 0)
    monotone = torch.where(after, torch.full_like(word_index, 1 << 60), running).contiguous()
    limit = (word_index + (int(max_span_width) - 1)).contiguous()
    return torch.searchsorted(monotone, limit, right=True) - 1


def pair_candidates(
    starts: torch.Tensor, ends: torch.Tensor, word_index: torch.Tensor, max_span_width: int
) -> torch.Tensor:
    """``LongTensor[N, 3]`` of ``(row, start, end)`` for all start positions in
    ``starts`` and end positions in ``ends`` (both ``BoolTensor[R, L]``) with
    ``start <= end`` and a width of at most ``max_span_width`` tokens."""
    R, L = starts.shape
    if R == 0 or L == 0:
        return torch.zeros((0, 3), dtype=torch.long, device=starts.device)
    positions = torch.arange(L, device=starts.device)
    end_limit = span_end_limit(word_index, max_span_width)
    mask = starts[:, :, None] & ends[:, None, :]
    mask &= positions[None, None, :] >= positions[None, :, None]
    mask &= positions[None, None, :] <= end_limit[:, :, None]
    return mask.nonzero()


def decode_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    match_fn: MatchFn,
    start_mask: torch.Tensor,
    end_mask: torch.Tensor,
    word_index: torch.Tensor,
    max_span_width: int,
    *,
    threshold: float = 0.5,
    match_threshold: float = 0.5,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Predicted spans of every row: ``(LongTensor[N, 3] (row, start, end),
    FloatTensor[N] probability)``, where the probability is
    ``p(start) * p(end) * p(match)``.

    A span is predicted when its start and end probabilities reach
    ``threshold`` (positions outside the masks never do) and the pair's match
    probability reaches ``match_threshold``.
    """
    cut = logit(threshold)
    starts = (start_logits >= cut) & start_mask
    ends = (end_logits >= cut) & end_mask
    pairs = pair_candidates(starts, ends, word_index, max_span_width)
    if pairs.shape[0] == 0:
        return pairs, start_logits.new_zeros((0,))
    rows, i, j = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    match = match_fn(rows, i, j).float()
    keep = match >= logit(match_threshold)
    pairs = pairs[keep]
    rows, i, j = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    prob = (
        torch.sigmoid(start_logits[rows, i].float())
        * torch.sigmoid(end_logits[rows, j].float())
        * torch.sigmoid(match[keep])
    )
    return pairs, prob


def gold_position_targets(gold: torch.Tensor, shape: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Start and end targets ``FloatTensor[R, L]`` from gold ``(row, start, end)``."""
    start = torch.zeros(shape, device=gold.device)
    end = torch.zeros(shape, device=gold.device)
    if gold.shape[0]:
        start[gold[:, 0], gold[:, 1]] = 1.0
        end[gold[:, 0], gold[:, 2]] = 1.0
    return start, end


def _pair_keys(pairs: torch.Tensor, L: int) -> torch.Tensor:
    return (pairs[:, 0] * L + pairs[:, 1]) * L + pairs[:, 2]


def span_losses(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    match_fn: MatchFn,
    start_mask: torch.Tensor,
    end_mask: torch.Tensor,
    word_index: torch.Tensor,
    gold: torch.Tensor,
    max_span_width: int,
    *,
    threshold: float = 0.5,
    max_candidates: Optional[int] = None,
    positive_weight: float = 1.0,
) -> Dict[str, torch.Tensor]:
    """The three MRC-NER losses (Li et al. 2020): binary cross-entropy of the
    start and end logits over the allowed positions, and of the match logits
    over the candidate pairs whose start and end are each predicted or gold
    ("pred_and_gold" candidates).  Returns ``{"start", "end", "match",
    "n_match"}``, each loss a mean (0 when there is nothing to score).

    ``max_candidates`` bounds the match loss's memory (early in training about
    half of all positions look like starts): above it, every gold pair is kept
    and the negatives are a random sample.

    ``positive_weight`` multiplies the loss of the gold start and end positions
    and of the gold pairs (BCE ``pos_weight``): about 1 context word in 100
    starts an entity of a given type, and most candidate pairs are not
    entities, so a weight above 1 lets a short training run reach the decoding
    thresholds on the gold ones sooner."""
    R, L = start_logits.shape
    gold = gold.to(device=start_logits.device, dtype=torch.long).reshape(-1, 3)
    gold_start, gold_end = gold_position_targets(gold, (R, L))
    zero = start_logits.sum() * 0.0
    pos_weight = start_logits.new_tensor(float(positive_weight), dtype=torch.float32)
    start_loss = (
        F.binary_cross_entropy_with_logits(
            start_logits[start_mask].float(), gold_start[start_mask], pos_weight=pos_weight
        )
        if bool(start_mask.any())
        else zero
    )
    end_loss = (
        F.binary_cross_entropy_with_logits(end_logits[end_mask].float(), gold_end[end_mask], pos_weight=pos_weight)
        if bool(end_mask.any())
        else zero
    )
    cut = logit(threshold)
    with torch.no_grad():
        starts = ((start_logits.detach() >= cut) | gold_start.bool()) & start_mask
        ends = ((end_logits.detach() >= cut) | gold_end.bool()) & end_mask
        pairs = pair_candidates(starts, ends, word_index, max_span_width)
    if pairs.shape[0]:
        is_gold = torch.isin(_pair_keys(pairs, L), _pair_keys(gold, L))
        if max_candidates is not None and pairs.shape[0] > int(max_candidates):
            negatives = (~is_gold).nonzero().flatten()
            n_neg = max(int(max_candidates) - int(is_gold.sum()), 0)
            keep = negatives[torch.randperm(len(negatives), device=negatives.device)[:n_neg]]
            keep = torch.cat([is_gold.nonzero().flatten(), keep])
            pairs, is_gold = pairs[keep], is_gold[keep]
        match = match_fn(pairs[:, 0], pairs[:, 1], pairs[:, 2]).float()
        target = is_gold.float()
        match_loss = F.binary_cross_entropy_with_logits(match, target, pos_weight=pos_weight)
    else:
        match_loss = zero
    return {
        "start": start_loss,
        "end": end_loss,
        "match": match_loss,
        "n_match": torch.tensor(pairs.shape[0]),
    }


def dense_match_fn(match_logits: torch.Tensor) -> MatchFn:
    """A ``match_fn`` reading a dense ``[R, L, L]`` tensor (tests, debugging)."""

    def match_fn(rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return match_logits[rows, starts, ends]

    return match_fn


def spans_to_tokens(pairs: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """``LongTensor[N, 3]`` of ``(row, start_token, end_token)`` (end exclusive)."""
    if pairs.shape[0] == 0:
        return pairs.new_zeros((0, 3))
    rows, i, j = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    return torch.stack([rows, word_index[rows, i], word_index[rows, j] + 1], dim=1)
