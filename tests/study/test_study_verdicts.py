"""The verdict rule, a pure function of an interval and the seed spread: one case of
each kind, and how a question combines its comparisons."""
import pytest

from spacy_softprompt.study.intervals import HELD, INCONCLUSIVE, NO_DATA, NOT_HELD, combine, judge, seed_spread


@pytest.mark.parametrize(
    "low, high, seeds, verdict",
    [
        (0.012, 0.051, (0.03, 0.01), HELD),  # interval above 0, seeds agree
        (0.012, 0.051, None, HELD),  # one seed: the interval alone
        (-0.060, -0.020, (-0.04, 0.01), NOT_HELD),  # the opposite, clearly
        (-0.008, 0.006, (0.0, 0.01), NOT_HELD),  # equal within one point
        (-0.008, 0.006, (0.0, 0.03), INCONCLUSIVE),  # equal on pooled documents, but seeds spread 3 points
        (-0.030, 0.045, (0.01, 0.01), INCONCLUSIVE),  # straddles 0, wider than the margin
        (0.012, 0.051, (0.02, 0.05), INCONCLUSIVE),  # documents say yes, seeds spread more than the gap
        (0.012, 0.051, (-0.02, 0.01), INCONCLUSIVE),  # documents and seed means disagree on the sign
        (-0.060, -0.020, (-0.01, 0.03), INCONCLUSIVE),  # opposite on documents, seeds too noisy
    ],
)
def test_judge(low, high, seeds, verdict):
    gap, noise = seeds if seeds else (None, None)
    assert judge(low, high, seed_gap=gap, seed_noise=noise) == verdict


def test_margin_is_a_parameter():
    assert judge(-0.015, 0.018) == INCONCLUSIVE
    assert judge(-0.015, 0.018, margin=0.02) == NOT_HELD


def test_combine():
    assert combine([HELD, HELD]) == HELD
    assert combine([HELD, NOT_HELD, INCONCLUSIVE]) == NOT_HELD
    assert combine([HELD, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([]) == NO_DATA and combine([NO_DATA]) == NO_DATA


def test_seed_spread():
    gap, noise = seed_spread([0.6, 0.62, 0.64], [0.5, 0.5, 0.5])
    assert gap == pytest.approx(0.12) and noise == pytest.approx(0.02)
    assert seed_spread([0.6], [0.5, 0.52])[1] is None
