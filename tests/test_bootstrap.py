"""Paired bootstrap over documents and the per-document counts format."""
import numpy as np
import pytest

from spacy_softprompt.bootstrap import micro_f1, paired_bootstrap
from spacy_softprompt.per_doc import COUNT_KEYS, per_doc_record, read_per_doc, stack
from spacy_softprompt.scoring import N2C2Counts, PRCounts, count_document

# [pred, pred_tp, gold, gold_tp] per document
SYSTEM = np.array([[4, 3, 5, 3], [2, 1, 2, 1], [6, 6, 7, 6], [0, 0, 3, 0], [5, 2, 4, 2]])


def test_micro_f1_matches_prcounts():
    for row in SYSTEM.tolist() + [[0, 0, 0, 0], [3, 2, 4, 3]]:
        assert micro_f1(np.array(row)) == pytest.approx(PRCounts(*row).fscore)
    # micro: counts summed before dividing; strict F1 = 2 tp / (pred + gold)
    assert micro_f1(SYSTEM[:3].sum(axis=0)) == pytest.approx(2 * 10 / (12 + 14))


def test_identical_systems_give_a_degenerate_interval_at_zero():
    result = paired_bootstrap(SYSTEM, SYSTEM.copy(), n_resamples=300)
    assert result.observed == result.mean == result.low == result.high == 0.0
    assert result.share_a_better == 0.0 and not result.excludes_zero
    assert result.f1_a == result.f1_b == pytest.approx(micro_f1(SYSTEM.sum(axis=0)))


def test_a_system_better_on_every_document_gives_an_interval_above_zero():
    better = SYSTEM.copy()
    better[:, [0, 1, 3]] += 1  # one more correct prediction on every document (gold unchanged)
    result = paired_bootstrap(better, SYSTEM, n_resamples=500)
    assert 0 < result.low <= result.mean <= result.high and result.excludes_zero
    assert result.share_a_better == 1.0
    assert result.observed == pytest.approx(micro_f1(better.sum(0)) - micro_f1(SYSTEM.sum(0)))
    flipped = paired_bootstrap(SYSTEM, better, n_resamples=500)
    assert flipped.high < 0 and flipped.low == pytest.approx(-result.high)


def test_deterministic_with_a_seed():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, size=(40, 4))
    a[:, 1] = np.minimum(a[:, 1], a[:, 0])
    a[:, 3] = a[:, 1]
    a[:, 2] = np.maximum(a[:, 2], a[:, 3])
    b = a.copy()
    b[::3, 1] = np.maximum(b[::3, 1] - 1, 0)
    b[:, 3] = b[:, 1]
    first, second = paired_bootstrap(a, b, seed=7), paired_bootstrap(a, b, seed=7)
    assert first == second
    other = paired_bootstrap(a, b, seed=8)
    assert (other.low, other.high) != (first.low, first.high)
    assert first.n_resamples == 2000 and first.low <= first.observed <= first.high


def test_seeds_are_pooled_per_document():
    # two seeds of A whose pooled counts equal 2x a single run: same F1 and interval as that run
    two = np.stack([SYSTEM, SYSTEM])
    pooled = paired_bootstrap(two, SYSTEM[None], n_resamples=200)
    assert pooled.observed == pytest.approx(0.0) and pooled.high == pytest.approx(0.0, abs=1e-12)
    assert (pooled.n_runs_a, pooled.n_runs_b, pooled.n_docs) == (2, 1, 5)
    with pytest.raises(ValueError, match="different numbers of documents"):
        paired_bootstrap(SYSTEM, SYSTEM[:3])
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(SYSTEM[:, :3], SYSTEM[:, :3])


def _counts(ents_gold, ents_pred):
    return count_document({"entities": ents_gold}, {"entities": ents_pred})


def test_per_doc_record_round_trip_and_the_per_label_form():
    gold = [(0, 5, "Drug"), (10, 15, "Dose")]
    counts = [_counts(gold, [(0, 5, "Drug")]), _counts(gold, [(0, 4, "Drug"), (10, 15, "Dose")])]
    record = per_doc_record(["d1", "d2"], counts)
    assert record["ents_strict"] == [[1, 1, 2, 1], [2, 1, 2, 1]]
    assert record["ents_lenient"] == [[1, 1, 2, 1], [2, 2, 2, 2]]
    parsed = read_per_doc({"per_doc": record})
    assert parsed.ids == ["d1", "d2"] and parsed.total("ents_strict").tolist() == [3, 2, 4, 2]
    # per-label form ({doc_id: N2C2Counts.to_dict()}), documents in another order
    labelled = read_per_doc({"per_doc": {"d2": counts[1].to_dict(), "d1": counts[0].to_dict()}})
    for key in COUNT_KEYS:
        assert stack([labelled], key, ["d1", "d2"])[0].tolist() == parsed.counts[key].tolist()
    with pytest.raises(ValueError, match="no per-document counts"):
        read_per_doc({"ents_strict_f": 0.5}, "old.json")
    with pytest.raises(ValueError, match="documents differ"):
        stack([parsed, read_per_doc({"per_doc": per_doc_record(["d1", "d3"], counts)})], "ents_strict")
    with pytest.raises(ValueError, match="unique"):
        per_doc_record(["d1", "d1"], counts)
    assert isinstance(N2C2Counts.from_dict(counts[0].to_dict()), N2C2Counts)


def test_per_doc_record_of_a_system_without_relations():
    gold = [(0, 5, "Drug"), (10, 15, "Dose")]
    counts = [_counts(gold, [(0, 5, "Drug")])]
    record = per_doc_record(["d1"], counts, keys=("ents_strict", "ents_lenient"))
    assert set(record) == {"ids", "ents_strict", "ents_lenient"}
    assert set(read_per_doc({"per_doc": record}).counts) == {"ents_strict", "ents_lenient"}
    with pytest.raises(ValueError, match="unknown counts keys"):
        per_doc_record(["d1"], counts, keys=("ents_strict", "entities"))
