"""n2c2 2018 Track 2 style scoring: hand-computed cases (the arithmetic is in the comments)."""
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.language import Language
from spacy.training import Example
from spacy.util import registry

import spacy_softprompt  # noqa: F401  (registers doc._.relations)
from spacy_softprompt.scoring import (
    SCORE_KEYS,
    Annotations,
    N2C2Counts,
    PRCounts,
    count_document,
    count_documents,
    format_table,
    make_annotations,
    make_n2c2_scorer,
    score_documents,
    score_examples,
)

SCORER_NAME = "spacy_softprompt.n2c2_scorer.v1"
ALL_KEYS = set(SCORE_KEYS) | {"ents_per_type", "rels_per_type"}


def doc(entities=(), relations=()):
    return {"entities": list(entities), "relations": list(relations)}


def prf(scores, prefix):
    return (scores[f"{prefix}_p"], scores[f"{prefix}_r"], scores[f"{prefix}_f"])


def approx3(p, r, f):
    return (pytest.approx(p), pytest.approx(r), pytest.approx(f))


# ---------------------------------------------------------------------------
# entities


def test_keys_exactly():
    scores = score_documents([(doc([(0, 5, "Drug")]), doc([(0, 5, "Drug")]))])
    assert set(scores) == ALL_KEYS
    assert set(scores["ents_per_type"]["Drug"]) >= {
        "strict_p", "strict_r", "strict_f", "lenient_p", "lenient_r", "lenient_f", "gold", "pred"
    }


def test_exact_match():
    scores = score_documents([(doc([(0, 5, "Drug")]), doc([(0, 5, "Drug")]))])
    assert prf(scores, "ents_strict") == (1.0, 1.0, 1.0)
    assert prf(scores, "ents_lenient") == (1.0, 1.0, 1.0)


def test_partial_overlap_is_lenient_tp_strict_fp_and_fn():
    # gold Drug [0,10), pred Drug [2,12): not identical -> strict 1 FP + 1 FN: P=0/1, R=0/1, F=0
    # overlap [2,10) and same type -> lenient: P=1/1, R=1/1, F=1
    scores = score_documents([(doc([(0, 10, "Drug")]), doc([(2, 12, "Drug")]))])
    assert prf(scores, "ents_strict") == (0.0, 0.0, 0.0)
    assert prf(scores, "ents_lenient") == (1.0, 1.0, 1.0)
    drug = scores["ents_per_type"]["Drug"]
    assert (drug["gold"], drug["pred"]) == (1, 1)
    assert (drug["strict_f"], drug["lenient_f"]) == (0.0, 1.0)


def test_touching_spans_do_not_overlap():
    # half-open offsets: [0,5) and [5,10) share no character -> no lenient match
    scores = score_documents([(doc([(0, 5, "Drug")]), doc([(5, 10, "Drug")]))])
    assert prf(scores, "ents_lenient") == (0.0, 0.0, 0.0)


def test_type_mismatch_is_wrong_strict_and_lenient():
    # same offsets, Dosage predicted for a gold Drug: no match in either mode
    # Drug: gold 1, pred 0 -> P=0 (no predictions), R=0/1; Dosage: gold 0, pred 1 -> P=0/1, R=0 (no gold)
    scores = score_documents([(doc([(0, 10, "Drug")]), doc([(0, 10, "Dosage")]))])
    assert prf(scores, "ents_strict") == (0.0, 0.0, 0.0)
    assert prf(scores, "ents_lenient") == (0.0, 0.0, 0.0)
    per_type = scores["ents_per_type"]
    assert set(per_type) == {"Drug", "Dosage"}
    assert (per_type["Drug"]["gold"], per_type["Drug"]["pred"]) == (1, 0)
    assert (per_type["Dosage"]["gold"], per_type["Dosage"]["pred"]) == (0, 1)
    assert all(per_type[t][k] == 0.0 for t in per_type for k in ("strict_p", "strict_r", "lenient_p", "lenient_r"))


def test_duplicate_predictions_count_once():
    # pred [0,10) Drug twice + [20,25) Drug -> set of 2 predictions; gold [0,10) Drug
    # strict: tp=1, P=1/2, R=1/1, F=2*.5*1/1.5=2/3 (without dedup it would be P=2/3... or 1/3 FP counted twice)
    gold = doc([(0, 10, "Drug")])
    pred = doc([(0, 10, "Drug"), (0, 10, "Drug"), (20, 25, "Drug")])
    scores = score_documents([(gold, pred)])
    assert prf(scores, "ents_strict") == approx3(0.5, 1.0, 2 / 3)
    assert prf(scores, "ents_lenient") == approx3(0.5, 1.0, 2 / 3)
    assert scores["ents_per_type"]["Drug"]["pred"] == 2
    # duplicate gold items count once too: gold twice, pred once -> 1/1, 1/1
    scores = score_documents([(doc([(0, 10, "Drug")] * 2), doc([(0, 10, "Drug")]))])
    assert prf(scores, "ents_strict") == (1.0, 1.0, 1.0)


def test_one_prediction_over_two_gold_entities():
    # gold Drug [0,5) and [6,10); pred Drug [0,10) overlaps both, equals neither
    # strict: P=0/1, R=0/2
    # lenient "any": the prediction matches a gold item -> P=1/1; both gold items are overlapped -> R=2/2
    # lenient "n2c2" (official script): tp=1 kept prediction, P=1/1, R=tp/gold=1/2, F=2*1*.5/1.5=2/3
    pair = (doc([(0, 5, "Drug"), (6, 10, "Drug")]), doc([(0, 10, "Drug")]))
    scores = score_documents([pair])
    assert prf(scores, "ents_strict") == (0.0, 0.0, 0.0)
    assert prf(scores, "ents_lenient") == (1.0, 1.0, 1.0)
    official = score_documents([pair], lenient_matching="n2c2")
    assert prf(official, "ents_lenient") == approx3(1.0, 0.5, 2 / 3)
    assert prf(official, "ents_strict") == (0.0, 0.0, 0.0)


def test_two_predictions_over_one_gold_entity():
    # gold Drug [0,10); pred Drug [0,4), [5,10) (both overlap it) and [20,25) (overlaps nothing)
    # lenient "any": 2 of 3 predictions match a gold item -> P=2/3; the gold item is found -> R=1/1;
    #   F=2*(2/3)*1/(5/3)=4/5
    # lenient "n2c2": [0,4) claims the gold item, [5,10) matches an already matched gold -> dropped;
    #   kept=2 ([0,4), [20,25)), tp=1 -> P=1/2, R=1/1, F=2/3
    # strict: P=0/3, R=0/1
    pair = (doc([(0, 10, "Drug")]), doc([(0, 4, "Drug"), (5, 10, "Drug"), (20, 25, "Drug")]))
    scores = score_documents([pair])
    assert prf(scores, "ents_lenient") == approx3(2 / 3, 1.0, 0.8)
    assert prf(scores, "ents_strict") == (0.0, 0.0, 0.0)
    official = score_documents([pair], lenient_matching="n2c2")
    assert prf(official, "ents_lenient") == approx3(0.5, 1.0, 2 / 3)
    counts = count_document(*pair)
    assert counts["ents_lenient"]["Drug"] == PRCounts(pred=3, pred_tp=2, gold=1, gold_tp=1)
    assert counts["ents_strict"]["Drug"] == PRCounts(pred=3, pred_tp=0, gold=1, gold_tp=0)


def test_official_lenient_can_be_below_strict():
    # nested gold Drug [0,2) and [0,5), predicted exactly: strict 2/2, 2/2
    # "any": each prediction overlaps a gold item, each gold item is overlapped -> 2/2, 2/2
    # "n2c2" (as the official script): [0,2) claims both gold items (it overlaps both), [0,5) then
    #   matches claimed gold items only -> dropped; kept=1, tp=1 -> P=1/1, R=1/2, F=2/3
    nested = [(0, 2, "Drug"), (0, 5, "Drug")]
    pair = (doc(nested), doc(nested))
    assert prf(score_documents([pair]), "ents_lenient") == (1.0, 1.0, 1.0)
    official = score_documents([pair], lenient_matching="n2c2")
    assert prf(official, "ents_strict") == (1.0, 1.0, 1.0)
    assert prf(official, "ents_lenient") == approx3(1.0, 0.5, 2 / 3)


# --- the official script's counting: every line, in order ("n2c2") -----------------------

TEN = [(10 * i, 10 * i + 5, "Drug") for i in range(10)]  # ten distinct gold Drug entities


def test_official_counts_a_repeated_spurious_prediction_once_per_line():
    # gold: TEN; pred: TEN + a spurious [200,205) Drug given on two lines
    # "any" (sets): pred = 11 distinct items, tp = 10 -> P = 10/11 = 0.9091, R = 10/10 = 1.0
    # "n2c2": the spurious lines match no gold, both are kept: kept = 12, tp = 10
    #   -> P = 10/12 = 0.8333, R = 10/10 = 1.0, F = 2*(5/6)*1/(11/6) = 10/11 = 0.9091 (strict and lenient)
    pair = (doc(TEN), doc(TEN + [(200, 205, "Drug")] * 2))
    assert prf(score_documents([pair]), "ents_strict") == approx3(10 / 11, 1.0, 20 / 21)
    official = score_documents([pair], lenient_matching="n2c2")
    for mode in ("strict", "lenient"):
        assert prf(official, f"ents_{mode}") == approx3(10 / 12, 1.0, 10 / 11)
    assert official["ents_per_type"]["Drug"]["pred"] == 12


def test_official_counts_a_repeated_gold_line_as_one_more_item_to_find():
    # gold: TEN + a second line for TEN[0] (11 lines); pred: TEN
    # "any": gold set of 10, all found -> P = R = 1.0
    # "n2c2": pred TEN[0] claims both gold copies but is one tp: kept = 10, tp = 10
    #   -> P = 10/10 = 1.0, R = 10/11 = 0.9091, F = 2*1*(10/11)/(21/11) = 20/21
    pair = (doc(TEN + [TEN[0]]), doc(TEN))
    assert prf(score_documents([pair]), "ents_strict") == (1.0, 1.0, 1.0)
    official = score_documents([pair], lenient_matching="n2c2")
    for mode in ("strict", "lenient"):
        assert prf(official, f"ents_{mode}") == approx3(1.0, 10 / 11, 20 / 21)
    assert official["ents_per_type"]["Drug"]["gold"] == 11


def test_official_drops_a_repeated_correct_prediction():
    # gold [0,5); pred [0,5) twice: the second copy matches an already claimed gold item -> dropped,
    #   neither TP nor FP: kept = 1, tp = 1 -> P = R = 1.0 (the same as "any")
    # gold twice and pred twice: the first pred claims both gold copies, the second is dropped:
    #   kept = 1, tp = 1 -> P = 1/1, R = 1/2, F = 2/3 (the script's figure for an exact copy of the file)
    one = [(0, 5, "Drug")]
    assert prf(score_documents([(doc(one), doc(one * 2))], lenient_matching="n2c2"), "ents_strict") == (1.0, 1.0, 1.0)
    both = score_documents([(doc(one * 2), doc(one * 2))], lenient_matching="n2c2")
    assert prf(both, "ents_strict") == approx3(1.0, 0.5, 2 / 3)


def test_official_counts_repeated_relation_lines():
    # gold: Dosage-Drug; pred: the same relation + a spurious Frequency-Drug on two lines
    # "any": pred = 2 distinct, tp = 1 -> P = 1/2, R = 1/1
    # "n2c2": kept = 3 (the spurious lines are kept), tp = 1 -> P = 1/3, R = 1/1, F = 2*(1/3)/(4/3) = 1/2
    spurious = ("Frequency-Drug", FREQ, DRUG)
    pair = (doc([], GOLD_RELS[:1]), doc([], GOLD_RELS[:1] + [spurious, spurious]))
    assert prf(score_documents([pair]), "rels_strict") == approx3(0.5, 1.0, 2 / 3)
    assert prf(score_documents([pair], lenient_matching="n2c2"), "rels_strict") == approx3(1 / 3, 1.0, 0.5)


def test_official_visits_predictions_in_the_order_given():
    # gold Drug A=[0,5), B=[10,15), C=[20,25); predictions in file order:
    #   p1=[12,14) (overlaps B), p2=[0,2) (A), p3=[4,11) (A and B), p4=[22,24) (C); none exact: strict 0
    # file order: p1 claims B, p2 claims A, p3 hits claimed A and B -> dropped, p4 claims C
    #   -> kept 3, tp 3: lenient P = 3/3, R = 3/3
    # sorted by position (what we did before): p2 claims A; p3 hits claimed A -> dropped (and claims B);
    #   p1 hits claimed B -> dropped; p4 claims C -> kept 2, tp 2: P = 2/2, R = 2/3 = 0.6667, F = 0.8
    # "any": the 4 predictions each overlap a gold item, the 3 gold items are overlapped -> 1.0, 1.0
    gold = doc([(0, 5, "Drug"), (10, 15, "Drug"), (20, 25, "Drug")])
    in_file_order = [(12, 14, "Drug"), (0, 2, "Drug"), (4, 11, "Drug"), (22, 24, "Drug")]
    official = score_documents([(gold, doc(in_file_order))], lenient_matching="n2c2")
    assert prf(official, "ents_lenient") == (1.0, 1.0, 1.0)
    assert prf(official, "ents_strict") == (0.0, 0.0, 0.0)
    by_position = score_documents([(gold, doc(sorted(in_file_order)))], lenient_matching="n2c2")
    assert prf(by_position, "ents_lenient") == approx3(1.0, 2 / 3, 0.8)
    assert prf(score_documents([(gold, doc(in_file_order))]), "ents_lenient") == (1.0, 1.0, 1.0)


def test_nothing_to_score_can_be_zero_as_the_official_script_prints():
    # no relations on either side: None by default (spaCy), 0.0 on request (the official script)
    counts = count_documents([(doc([(0, 5, "Drug")]), doc([(0, 5, "Drug")]))], lenient_matching="n2c2")
    assert counts.scores()["rels_strict_f"] is None
    official = counts.scores(nothing_to_score=0.0)
    assert all(official[f"rels_{m}_{x}"] == 0.0 for m in ("strict", "lenient") for x in "prf")
    assert official["rels_per_type"] == {} and official["ents_strict_f"] == 1.0


def test_strict_is_the_same_in_both_lenient_modes():
    pair = (
        doc([(0, 5, "Drug"), (6, 10, "Drug"), (12, 20, "Dosage")]),
        doc([(0, 5, "Drug"), (0, 10, "Drug"), (12, 20, "Dosage"), (12, 20, "Drug")]),
    )
    a, b = score_documents([pair]), score_documents([pair], lenient_matching="n2c2")
    for kind in ("ents", "rels"):
        assert prf(a, f"{kind}_strict") == prf(b, f"{kind}_strict")


def test_unknown_lenient_mode():
    with pytest.raises(ValueError):
        score_documents([], lenient_matching="partial")
    with pytest.raises(ValueError):
        make_n2c2_scorer(lenient_matching="partial")


# ---------------------------------------------------------------------------
# relations

DRUG = (0, 7, "Drug")  # "aspirin"
DOSE = (10, 15, "Dosage")  # "10 mg"
FREQ = (16, 21, "Frequency")  # "daily"
GOLD_RELS = [("Dosage-Drug", DOSE, DRUG), ("Frequency-Drug", FREQ, DRUG)]


def test_relation_exact():
    scores = score_documents([(doc([DRUG, DOSE, FREQ], GOLD_RELS), doc([DRUG, DOSE, FREQ], GOLD_RELS))])
    assert prf(scores, "rels_strict") == (1.0, 1.0, 1.0)
    assert prf(scores, "rels_lenient") == (1.0, 1.0, 1.0)


def test_relation_with_one_wrong_argument():
    # pred 1: Dosage-Drug with arg1 [10,14) Dosage: overlaps the gold arg1 [10,15) -> strict miss, lenient hit
    # pred 2: Frequency-Drug with arg2 [30,37) Drug: overlaps no gold arg2 -> strict and lenient miss
    # strict: P=0/2, R=0/2, F=0
    # lenient: P=1/2, R=1/2, F=1/2
    # per type: Dosage-Drug strict 0/1, 0/1, lenient 1/1, 1/1; Frequency-Drug 0 everywhere
    pred_rels = [("Dosage-Drug", (10, 14, "Dosage"), DRUG), ("Frequency-Drug", FREQ, (30, 37, "Drug"))]
    scores = score_documents([(doc([DRUG, DOSE, FREQ], GOLD_RELS), doc([], pred_rels))])
    assert prf(scores, "rels_strict") == (0.0, 0.0, 0.0)
    assert prf(scores, "rels_lenient") == approx3(0.5, 0.5, 0.5)
    dd, fd = scores["rels_per_type"]["Dosage-Drug"], scores["rels_per_type"]["Frequency-Drug"]
    assert (dd["strict_p"], dd["strict_r"], dd["lenient_p"], dd["lenient_r"]) == (0.0, 0.0, 1.0, 1.0)
    assert (fd["lenient_p"], fd["lenient_r"], fd["lenient_f"]) == (0.0, 0.0, 0.0)
    assert (dd["gold"], dd["pred"], fd["gold"], fd["pred"]) == (1, 1, 1, 1)
    # relations are scored on their own arguments: no predicted entities at all here
    assert prf(scores, "ents_strict") == (0.0, 0.0, 0.0)


def test_relation_argument_needs_the_entity_type():
    # arg1 has the gold offsets but type Strength instead of Dosage: wrong, strict and lenient
    pred_rels = [("Dosage-Drug", (10, 15, "Strength"), DRUG)]
    scores = score_documents([(doc([], GOLD_RELS[:1]), doc([], pred_rels))])
    assert prf(scores, "rels_lenient") == (0.0, 0.0, 0.0)


def test_relation_arguments_are_ordered():
    # arguments swapped: arg1 compared with arg1 only -> miss
    scores = score_documents([(doc([], GOLD_RELS[:1]), doc([], [("Dosage-Drug", DRUG, DOSE)]))])
    assert prf(scores, "rels_strict") == (0.0, 0.0, 0.0)
    assert prf(scores, "rels_lenient") == (0.0, 0.0, 0.0)


def test_relation_type_wrong():
    # right arguments, label Strength-Drug instead of Dosage-Drug: 0 in both modes
    # per type: Dosage-Drug gold 1 pred 0, Strength-Drug gold 0 pred 1
    scores = score_documents([(doc([], GOLD_RELS[:1]), doc([], [("Strength-Drug", DOSE, DRUG)]))])
    assert prf(scores, "rels_strict") == (0.0, 0.0, 0.0)
    assert prf(scores, "rels_lenient") == (0.0, 0.0, 0.0)
    per_type = scores["rels_per_type"]
    assert (per_type["Dosage-Drug"]["gold"], per_type["Dosage-Drug"]["pred"]) == (1, 0)
    assert (per_type["Strength-Drug"]["gold"], per_type["Strength-Drug"]["pred"]) == (0, 1)


def test_relation_dicts_and_duplicates():
    # relation dicts as in doc._.relations; "id"/"score" are ignored, so the two predictions are one item
    # strict: P=1/1, R=1/2 (Frequency-Drug missed), F=2/3
    pred_rels = [
        {"label": "Dosage-Drug", "arg1": list(DOSE), "arg2": list(DRUG), "id": "R1"},
        {"label": "Dosage-Drug", "arg1": list(DOSE), "arg2": list(DRUG), "score": 0.9},
    ]
    scores = score_documents([(doc([], GOLD_RELS), doc([], pred_rels))])
    assert prf(scores, "rels_strict") == approx3(1.0, 0.5, 2 / 3)
    assert scores["rels_per_type"]["Dosage-Drug"]["pred"] == 1


# ---------------------------------------------------------------------------
# empty and undefined values


def test_nothing_to_score_gives_none():
    # spaCy's convention (get_ner_prf): no gold and no predictions -> None, per-type empty
    for pairs in ([], [(doc(), doc())], [(Annotations(), Annotations())]):
        scores = score_documents(pairs)
        assert set(scores) == ALL_KEYS
        assert all(scores[k] is None for k in SCORE_KEYS)
        assert scores["ents_per_type"] == {} and scores["rels_per_type"] == {}


def test_entities_without_relations():
    # entities scored, relations empty on both sides -> rels_* None, ents_* floats
    scores = score_documents([(doc([(0, 5, "Drug")]), doc([(0, 5, "Drug")]))])
    assert all(scores[f"rels_{m}_{x}"] is None for m in ("strict", "lenient") for x in "prf")
    assert scores["rels_per_type"] == {}


def test_empty_prediction_or_empty_gold():
    # no predictions: P=0 (undefined -> 0.0), R=0/1, F=0
    scores = score_documents([(doc([(0, 5, "Drug")], GOLD_RELS), doc())])
    assert prf(scores, "ents_strict") == (0.0, 0.0, 0.0)
    assert prf(scores, "rels_lenient") == (0.0, 0.0, 0.0)
    # no gold: P=0/1, R=0 (undefined -> 0.0), F=0
    scores = score_documents([(doc(), doc([(0, 5, "Drug")], GOLD_RELS))])
    assert prf(scores, "ents_lenient") == (0.0, 0.0, 0.0)
    assert prf(scores, "rels_strict") == (0.0, 0.0, 0.0)
    assert isinstance(scores["ents_strict_p"], float)


# ---------------------------------------------------------------------------
# several documents

DOC1 = (doc([(0, 5, "Drug"), (10, 15, "Drug")]), doc([(0, 5, "Drug"), (20, 25, "Drug")]))
DOC2 = (
    doc([(0, 5, "Drug"), (10, 15, "Dosage"), (20, 25, "Drug")]),
    doc([(0, 5, "Drug"), (10, 15, "Dosage")]),
)


def test_micro_average_over_documents():
    # doc1: tp=1, pred=2, gold=2 (P=1/2, R=1/2); doc2: tp=2, pred=2, gold=3 (P=1, R=2/3)
    # micro: tp=3, pred=4, gold=5 -> P=3/4, R=3/5, F=2*.75*.6/1.35=2/3
    # (the macro average of the documents would give R=(1/2+2/3)/2=7/12, not 3/5)
    scores = score_documents([DOC1, DOC2])
    assert prf(scores, "ents_strict") == approx3(0.75, 0.6, 2 / 3)
    assert prf(scores, "ents_lenient") == approx3(0.75, 0.6, 2 / 3)


def test_per_type_over_documents():
    # Drug: doc1 tp=1 pred=2 gold=2, doc2 tp=1 pred=1 gold=2 -> tp=2, pred=3, gold=4
    #   P=2/3, R=1/2, F=2*(2/3)*(1/2)/(7/6)=4/7
    # Dosage: doc2 tp=1 pred=1 gold=1 -> 1, 1, 1
    per_type = score_documents([DOC1, DOC2])["ents_per_type"]
    assert list(per_type) == ["Dosage", "Drug"]
    drug, dosage = per_type["Drug"], per_type["Dosage"]
    assert (drug["strict_p"], drug["strict_r"], drug["strict_f"]) == approx3(2 / 3, 0.5, 4 / 7)
    assert (drug["lenient_p"], drug["lenient_r"], drug["lenient_f"]) == approx3(2 / 3, 0.5, 4 / 7)
    assert (drug["gold"], drug["pred"]) == (4, 3)
    assert (dosage["strict_f"], dosage["lenient_f"], dosage["gold"], dosage["pred"]) == (1.0, 1.0, 1, 1)
    # spaCy's per-type shape repeats the strict numbers
    assert (drug["p"], drug["r"], drug["f"]) == (drug["strict_p"], drug["strict_r"], drug["strict_f"])


def test_counts_add_up_and_serialise():
    c1, c2 = count_document(*DOC1), count_document(*DOC2)
    total = count_documents([DOC1, DOC2])
    assert c1 + c2 == total
    acc = N2C2Counts()
    acc += c1
    acc += c2
    assert acc == total
    # per-type counts add up to the micro counts
    assert total.total("ents_strict") == PRCounts(pred=4, pred_tp=3, gold=5, gold_tp=3)
    data = json.loads(json.dumps(total.to_dict()))
    assert data["ents_strict"]["Drug"] == [3, 2, 4, 2]
    assert N2C2Counts.from_dict(data) == total
    assert N2C2Counts.from_dict(data).scores() == score_documents([DOC1, DOC2])
    with pytest.raises(ValueError):
        N2C2Counts.from_dict({"ents_partial": {}})


def test_inputs_in_several_shapes():
    ents, rels = [(0, 7, "Drug"), [10, 15, "Dosage"]], [("Dosage-Drug", DOSE, DRUG)]
    as_dict = doc(ents, rels)
    as_pair = (ents, rels)
    as_annotations = make_annotations(ents, rels)
    a = score_documents([(as_dict, as_pair)])
    b = score_documents([(as_annotations, as_dict)])
    assert a == b
    assert a["ents_strict_f"] == 1.0 and a["rels_strict_f"] == 1.0


def test_format_table():
    scores = score_documents([DOC1, DOC2])
    table = format_table(scores)
    lines = table.splitlines()
    assert lines[0].split() == ["gold", "pred", "strict", "P", "strict", "R", "strict", "F",
                                "lenient", "P", "lenient", "R", "lenient", "F"]
    drug = next(line for line in lines if line.strip().startswith("Drug"))
    assert drug.split() == ["Drug", "4", "3", "0.6667", "0.5000", "0.5714", "0.6667", "0.5000", "0.5714"]
    overall = [line for line in lines if "Overall (micro)" in line]
    assert overall[0].split()[2:] == ["5", "4", "0.7500", "0.6000", "0.6667", "0.7500", "0.6000", "0.6667"]
    # no relations: dashes
    assert overall[1].split()[2:] == ["0", "0"] + ["-"] * 6
    assert "Relations:" in table


# ---------------------------------------------------------------------------
# spaCy

TEXT = "aspirin   10 mg daily for pain"
#       0      7  10 15 16  21


def make_doc(nlp, entities=(), relations=(), spans=True, words=None):
    d = spacy.tokens.Doc(nlp.vocab, words=words) if words else nlp.make_doc(TEXT)
    ents = [d.char_span(s, e, label=lab) for s, e, lab in entities]
    assert all(ents)
    if spans:
        d.spans["entities"] = ents
    d.ents = spacy.util.filter_spans(ents)
    d._.relations = [{"label": lab, "arg1": list(a1), "arg2": list(a2)} for lab, a1, a2 in relations]
    return d


@pytest.fixture
def nlp():
    return spacy.blank("en")


@pytest.fixture
def examples(nlp):
    # gold: nested entities in the span group ("10 mg daily" Regimen over "10 mg" and "daily")
    gold = make_doc(nlp, [DRUG, DOSE, FREQ, (10, 21, "Regimen")], GOLD_RELS)
    # prediction: "10 m" would not be a token, so "10" Dosage [10,12) (lenient only); drug exact;
    # no Frequency; one relation with the partial Dosage argument
    pred = make_doc(nlp, [DRUG, (10, 12, "Dosage")], [("Dosage-Drug", (10, 12, "Dosage"), DRUG)])
    return [Example(pred, gold)]


# entities: gold 4 (Drug, Dosage, Frequency, Regimen), pred 2 (Drug exact, Dosage partial)
#   strict: tp=1 -> P=1/2, R=1/4, F=2*(1/2)(1/4)/(3/4)=1/3
#   lenient: 2 predictions match -> P=2/2; Drug and Dosage found -> R=2/4; F=2*1*.5/1.5=2/3
# relations: gold 2, pred 1 (partial arg1) -> strict 0, 0, 0; lenient P=1/1, R=1/2, F=2/3
EXPECTED = {
    "ents_strict": (0.5, 0.25, 1 / 3),
    "ents_lenient": (1.0, 0.5, 2 / 3),
    "rels_strict": (0.0, 0.0, 0.0),
    "rels_lenient": (1.0, 0.5, 2 / 3),
}


def check_expected(scores):
    assert set(scores) == ALL_KEYS
    for prefix, values in EXPECTED.items():
        assert prf(scores, prefix) == approx3(*values), prefix
    assert scores["ents_per_type"]["Regimen"]["gold"] == 1


def test_score_examples(examples):
    check_expected(score_examples(examples))


def test_score_examples_falls_back_to_doc_ents(nlp):
    # no span group on either side: doc.ents is used (non-overlapping view only)
    gold = make_doc(nlp, [DRUG, DOSE], spans=False)
    pred = make_doc(nlp, [DRUG], spans=False)
    scores = score_examples([Example(pred, gold)])
    # gold 2, pred 1, tp 1 -> P=1, R=1/2, F=2/3
    assert prf(scores, "ents_strict") == approx3(1.0, 0.5, 2 / 3)


def test_score_examples_with_other_tokenization(nlp):
    # character offsets do not depend on the tokenization of the predicted doc
    gold = make_doc(nlp, [DRUG, DOSE])
    words = ["aspi", "rin", "  ", "10", "mg", "daily", "for", "pain"]
    pred = spacy.tokens.Doc(nlp.vocab, words=words, spaces=[False, True, False, True, True, True, True, False])
    assert pred.text == TEXT
    pred.spans["entities"] = [pred.char_span(0, 7, "Drug"), pred.char_span(10, 15, "Dosage")]
    scores = score_examples([Example(pred, gold)])
    assert prf(scores, "ents_strict") == (1.0, 1.0, 1.0)


def test_doc_items_are_distinct_and_sorted_in_both_modes(nlp):
    # a Doc has no lines: the same span twice in the span group is one entity, in "n2c2" as in "any"
    # gold: aspirin; pred: aspirin + "for" [22,25) Drug twice in the span group
    #   distinct pred = 2, tp = 1 -> P = 1/2, R = 1/1 (one item per listed span would give P = 1/3 in "n2c2")
    gold = make_doc(nlp, [DRUG])
    pred = make_doc(nlp, [DRUG, (22, 25, "Drug"), (22, 25, "Drug")])
    for mode in ("any", "n2c2"):
        assert prf(score_examples([Example(pred, gold)], lenient_matching=mode), "ents_strict") == approx3(0.5, 1.0, 2 / 3)


def test_registered_scorer(examples):
    factory = registry.scorers.get(SCORER_NAME)
    assert factory is make_n2c2_scorer
    scorer = factory()
    # Pipe.score passes the component's cfg and labels: ignored
    check_expected(scorer(examples, labels=("Drug",), threshold=0.5))
    # spans_key from the component's cfg picks another span group
    # absent group -> doc.ents: the gold view keeps the longest span, Regimen [10,21), not Dosage/Frequency
    scores = scorer(examples, spans_key="missing")
    assert set(scores["ents_per_type"]) == {"Drug", "Dosage", "Regimen"}
    assert scores["ents_per_type"]["Dosage"]["gold"] == 0


def test_scorer_from_config(examples):
    cfg = {"s": {"@scorers": SCORER_NAME, "lenient_matching": "n2c2", "spans_key": "entities"}}
    scorer = registry.resolve(cfg)["s"]
    scores = scorer(examples, spans_key="ignored because the factory has one")
    check_expected(scores)  # no overlapping predictions here: "n2c2" = "any"


@pytest.mark.skipif(
    not any(ep.name == SCORER_NAME for ep in entry_points(group="spacy_scorers")),
    reason="package not installed (pip install -e .): entry point missing",
)
def test_entry_point_resolves_without_import():
    code = (
        "import spacy, sys\n"
        f"f = spacy.registry.scorers.get({SCORER_NAME!r})\n"
        "print(f.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "spacy_softprompt.scoring"


@Language.factory(
    "test_n2c2_scored_pipe",
    default_config={"scorer": {"@scorers": SCORER_NAME}},
    default_score_weights={"ents_lenient_f": 0.5, "rels_lenient_f": 0.5, "ents_per_type": None, "rels_per_type": None},
)
def make_scored_pipe(nlp, name, scorer):
    return _ScoredPipe(name, scorer)


class _ScoredPipe(spacy.pipeline.Pipe):
    """Predicts the same entities and relation as the `examples` fixture, to score through nlp.evaluate."""

    def __init__(self, name, scorer):
        self.name = name
        self.scorer = scorer
        self.cfg = {"spans_key": "entities"}

    def __call__(self, d):
        d.spans["entities"] = [d.char_span(0, 7, "Drug"), d.char_span(10, 12, "Dosage")]
        d._.relations = [{"label": "Dosage-Drug", "arg1": [10, 12, "Dosage"], "arg2": list(DRUG)}]
        return d


def test_pipeline_evaluate_and_training_weights(nlp, examples):
    from spacy.cli.evaluate import handle_scores_per_type
    from spacy.training.loop import create_evaluation_callback

    nlp.add_pipe("test_n2c2_scored_pipe")
    gold = [Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples]
    scores = nlp.evaluate(gold)
    check_expected({k: v for k, v in scores.items() if k in ALL_KEYS})
    # `spacy evaluate` prints ents_per_type with spaCy's {"p", "r", "f"} shape: must not fail
    data = handle_scores_per_type(scores, {}, silent=True)
    assert data["ents_per_type"]["Drug"]["p"] == 1.0
    # [training.score_weights]: 0.5 * ents_lenient_f + 0.5 * rels_lenient_f = 0.5 * 2/3 + 0.5 * 2/3
    weights = nlp.config["training"]["score_weights"]
    assert weights["ents_lenient_f"] == 0.5
    evaluate = create_evaluation_callback(nlp, lambda _nlp: gold, weights)
    main, other = evaluate()
    assert main == pytest.approx(2 / 3)
    assert other["rels_strict_f"] == 0.0


# ---------------------------------------------------------------------------
# properties

_entity = st.builds(
    lambda start, length, label: (start, start + length, label),
    st.integers(0, 40), st.integers(1, 8), st.sampled_from(["Drug", "Dosage"]),
)
_relation = st.tuples(st.sampled_from(["Dosage-Drug", "Reason-Drug"]), _entity, _entity)
_document = st.builds(doc, st.lists(_entity, max_size=8), st.lists(_relation, max_size=4))


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(_document, _document), max_size=4), st.sampled_from(["any", "n2c2"]))
def test_properties(pairs, mode):
    counts = count_documents(pairs, lenient_matching=mode)
    scores = counts.scores()
    for kind in ("ents", "rels"):
        strict, lenient = counts.total(f"{kind}_strict"), counts.total(f"{kind}_lenient")
        # per-type counts add up to the micro counts (every match needs the same label)
        per_type = scores[f"{kind}_per_type"]
        assert sum(v["gold"] for v in per_type.values()) == strict.gold
        assert sum(v["pred"] for v in per_type.values()) == strict.pred
        # an identical item also overlaps: lenient finds at least what strict finds
        # (not so with the official script's pare-down, see test_official_lenient_can_be_below_strict)
        if mode == "any":
            assert lenient.gold_tp >= strict.gold_tp
            assert lenient.pred_tp >= strict.pred_tp
        for match, total in (("strict", strict), ("lenient", lenient)):
            if strict.gold == strict.pred == 0:
                assert [scores[f"{kind}_{match}_{x}"] for x in "prf"] == [None] * 3
                continue
            p = total.pred_tp / total.pred if total.pred else 0.0
            r = total.gold_tp / total.gold if total.gold else 0.0
            assert scores[f"{kind}_{match}_p"] == p and scores[f"{kind}_{match}_r"] == r
            assert scores[f"{kind}_{match}_f"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    # document order does not change anything
    assert score_documents(pairs[::-1], lenient_matching=mode) == scores
    # "any" reads sets: item order and repeated predictions do not change anything either
    # ("n2c2" counts every item in order, see the official-counting tests)
    if mode == "any":
        shuffled = [(g, {"entities": p["entities"][::-1] * 2, "relations": p["relations"] * 2}) for g, p in pairs]
        assert score_documents(shuffled, lenient_matching=mode) == scores
    # on distinct items, strict counts are the same in both modes
    distinct = [(_distinct(g), _distinct(p)) for g, p in pairs]
    strict_keys = [k for k in SCORE_KEYS if "_strict_" in k]
    a, b = score_documents(distinct, lenient_matching="any"), score_documents(distinct, lenient_matching="n2c2")
    assert [a[k] for k in strict_keys] == [b[k] for k in strict_keys]
    # a perfect prediction of distinct items scores 1.0 everywhere it is defined
    perfect = score_documents([(g, g) for g, _ in distinct], lenient_matching=mode)
    keys = SCORE_KEYS if mode == "any" else strict_keys
    assert all(perfect[k] in (None, 1.0) for k in keys)


def _distinct(d):
    return {"entities": list(dict.fromkeys(d["entities"])), "relations": list(dict.fromkeys(d["relations"]))}
