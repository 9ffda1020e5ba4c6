"""`score` on small brat folders written in tmp_path: repeated lines, missing and .ann-only
prediction files, predictions outside the schema, visiting order (figures by hand in the comments)."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spacy_softprompt.brat_scoring import ScoringPolicy, score_brat_dirs
from spacy_softprompt.cli import app
from spacy_softprompt.data.errors import BratError

runner = CliRunner()

# ten 5-character drug names, one space apart, then a word no gold annotation covers
TEXT = " ".join(f"drug{i}" for i in range(10)) + " oops"  # drug<i> at [6i, 6i+5); "oops" at [60, 64)


def t(ann_id, label, start, end, text=TEXT):
    return f"{ann_id}\t{label} {start} {end}\t{text[start:end]}"


TEN = [t(f"T{i + 1}", "Drug", 6 * i, 6 * i + 5) for i in range(10)]


def write(folder: Path, name: str, lines, text=TEXT, txt=True):
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    if txt:
        (folder / f"{name}.txt").write_text(text, encoding="utf8")
    (folder / f"{name}.ann").write_text("".join(line + "\n" for line in lines), encoding="utf8")


def prf(scores, prefix):
    return tuple(scores[f"{prefix}_{x}"] for x in "prf")


def approx3(p, r, f):
    return (pytest.approx(p), pytest.approx(r), pytest.approx(f))


# --- repeated lines ------------------------------------------------------------------------


def test_repeated_spurious_prediction_is_one_fp_per_line(tmp_path):
    # gold: T1..T10; pred: T1..T10 + "oops" [60,64) Drug on two lines (T11, line 11; T12, line 12)
    # n2c2: kept 12, tp 10 -> P = 10/12 = 0.8333, R = 10/10, F = 10/11 (strict = lenient)
    # any (sets; what `score` did before for both modes): pred 11 distinct -> P = 10/11 = 0.9091, R = 1.0
    write(tmp_path / "gold", "a", TEN)
    write(tmp_path / "pred", "a", TEN + [t("T11", "Drug", 60, 64), t("T12", "Drug", 60, 64)])
    official = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching="n2c2")
    for mode in ("strict", "lenient"):
        assert prf(official, f"ents_{mode}") == approx3(10 / 12, 1.0, 10 / 11)
    assert official["repeated"] == {"gold": 0, "pred": 1}
    (note,) = [n for n in official["notes"] if n["kind"] == "repeated"]
    assert (note["ann_id"], note["line"]) == ("T12", 12)
    assert "T11 (line 11)" in note["message"] and "oops" not in json.dumps(note)
    sets = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching="any")
    assert prf(sets, "ents_strict") == approx3(10 / 11, 1.0, 20 / 21)
    assert "counted once" in sets["notes"][0]["message"]


def test_repeated_gold_line_is_one_more_item_to_find(tmp_path):
    # gold: T1..T10 + T11 = a second line for drug0 [0,5); pred: T1..T10
    # n2c2: 11 gold lines, tp 10 -> P = 10/10, R = 10/11 = 0.9091, F = 20/21
    # any: gold set of 10 -> R = 1.0 (what `score` did before)
    write(tmp_path / "gold", "a", TEN + [t("T11", "Drug", 0, 5)])
    write(tmp_path / "pred", "a", TEN)
    official = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching="n2c2")
    assert prf(official, "ents_strict") == approx3(1.0, 10 / 11, 20 / 21)
    assert official["repeated"] == {"gold": 1, "pred": 0}
    assert prf(score_brat_dirs(tmp_path / "gold", tmp_path / "pred"), "ents_strict") == (1.0, 1.0, 1.0)


def test_a_line_repeating_its_id_counts_once(tmp_path):
    # the official script keys lines by id: the same T1 line twice is one item (our parser keeps the
    # first and reports the duplicate id) -> gold 10 items, all found: n2c2 R = 10/10
    write(tmp_path / "gold", "a", TEN + [TEN[0]])
    write(tmp_path / "pred", "a", TEN)
    official = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching="n2c2")
    assert prf(official, "ents_strict") == (1.0, 1.0, 1.0)
    assert official["issues"] == 1  # duplicate id


# --- prediction files ------------------------------------------------------------------------


def test_prediction_folder_of_ann_files_only(tmp_path):
    # predictions equal to gold, written without .txt: every figure 1.0 (was 0.0: documents were
    # found through their .txt, so no prediction was read)
    write(tmp_path / "gold", "a", TEN[:5])
    write(tmp_path / "gold", "sub/b", TEN[5:])
    write(tmp_path / "pred", "a", TEN[:5], txt=False)
    write(tmp_path / "pred", "sub/b", TEN[5:], txt=False)
    for mode in ("any", "n2c2"):
        scores = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching=mode)
        assert prf(scores, "ents_strict") == (1.0, 1.0, 1.0) and prf(scores, "ents_lenient") == (1.0, 1.0, 1.0)
        assert scores["n_scored"] == 2 and scores["missing_predictions"] == [] and scores["issues"] == 0


def test_gold_document_without_prediction(tmp_path):
    # gold a: T1, T2; gold b: T3, T4, T5; pred: a only, exact (b.txt alone is no prediction)
    # skip (n2c2 default, the official script): only a is scored -> P = 2/2, R = 2/2
    # miss (any default): b's 3 items are missed -> P = 2/2, R = 2/5 = 0.4, F = 2*1*0.4/1.4 = 4/7
    write(tmp_path / "gold", "a", TEN[:2])
    write(tmp_path / "gold", "b", TEN[2:5])
    write(tmp_path / "pred", "a", TEN[:2])
    (tmp_path / "pred" / "b.txt").write_text(TEXT, encoding="utf8")
    gold, pred = tmp_path / "gold", tmp_path / "pred"
    skip = score_brat_dirs(gold, pred, lenient_matching="n2c2")
    assert prf(skip, "ents_strict") == (1.0, 1.0, 1.0)
    assert (skip["n_scored"], skip["missing_predictions"], skip["policy"]["missing_pred"]) == (1, ["b"], "skip")
    miss = score_brat_dirs(gold, pred, lenient_matching="n2c2", missing_pred="miss")
    assert prf(miss, "ents_strict") == approx3(1.0, 0.4, 4 / 7)
    assert prf(score_brat_dirs(gold, pred), "ents_strict") == approx3(1.0, 0.4, 4 / 7)  # any: miss
    assert prf(score_brat_dirs(gold, pred, missing_pred="skip"), "ents_strict") == (1.0, 1.0, 1.0)
    with pytest.raises(BratError):
        score_brat_dirs(gold, pred, missing_pred="ignore")


# --- schema ------------------------------------------------------------------------------------

RX = "aspirin 10 mg rash"  # aspirin [0,7), 10 mg [8,13), rash [14,18)


def test_predictions_outside_the_schema_are_false_positives(tmp_path):
    # schema n2c2_2018. gold: Drug T1, Strength T2, R1 Strength-Drug(T2, T1), and T3 "rash" Sign_symptom
    #   (outside the schema: not scored, gold_outside_schema ents 1)
    # pred: the same three lines + T3 "rash" Sign_symptom + R2 Strength-Drug(T1, T2) (arguments swapped:
    #   the pair (Drug, Strength) is not in the schema)
    # entities: pred 3 (Drug, Strength, Sign_symptom outside), tp 2 -> P = 2/3, R = 2/2, F = 0.8
    # relations: pred 2 (R1, R2 outside), tp 1 -> P = 1/2 = 0.50, R = 1/1, F = 2/3; both in the
    #   Strength-Drug row (the official script's per-type counting)
    #   (before: R2 and T3 were removed from the predictions -> P = 1.00 for both)
    lines = [t("T1", "Drug", 0, 7, RX), t("T2", "Strength", 8, 13, RX), "R1\tStrength-Drug Arg1:T2 Arg2:T1"]
    write(tmp_path / "gold", "a", lines + [t("T3", "Sign_symptom", 14, 18, RX)], text=RX)
    write(tmp_path / "pred", "a", lines + [t("T3", "Sign_symptom", 14, 18, RX), "R2\tStrength-Drug Arg1:T1 Arg2:T2"], text=RX)
    for mode in ("any", "n2c2"):
        scores = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", schema="n2c2_2018", lenient_matching=mode)
        assert prf(scores, "ents_strict") == approx3(2 / 3, 1.0, 0.8)
        assert prf(scores, "rels_strict") == approx3(0.5, 1.0, 2 / 3)
        assert scores["outside_schema"] == {
            "ents": {"Sign_symptom (outside schema)": 1}, "rels": {"Strength-Drug": 1}
        }
        assert list(scores["rels_per_type"]) == ["Strength-Drug"]
        assert scores["rels_per_type"]["Strength-Drug"]["pred"] == 2  # R1 once (not per mapping path) + R2
        assert scores["gold_outside_schema"] == {"ents": 1, "rels": 0}
        assert scores["repeated"] == {"gold": 0, "pred": 0}


FREQ = "aspirin daily for 3 days"  # aspirin [0,7), daily [8,13), for 3 days [14,24)


def test_relation_with_arguments_outside_the_schema_is_a_false_positive_in_its_type_row(tmp_path):
    # schema n2c2_2018. gold: Drug T1, Frequency T2, R1 Frequency-Drug(T2, T1)
    # pred: the same + Duration T3 + R2 Frequency-Drug(T3, T1): its first argument is a Duration, and
    #   (Duration, Drug) is not an allowed pair of Frequency-Drug
    # official track2-evaluate (and now us): the Frequency-Drug row has pred 2 (R1, R2), gold 1, tp 1
    #   -> P = 1/2 = 0.5, R = 1/1, F = 2/3 (a separate "(outside schema)" row gave 1.0 / 1.0 / 1.0)
    # entities: Duration T3 is in the schema: an ordinary false positive in the Duration row (P 0/1)
    gold = [t("T1", "Drug", 0, 7, FREQ), t("T2", "Frequency", 8, 13, FREQ), "R1\tFrequency-Drug Arg1:T2 Arg2:T1"]
    pred = gold + [t("T3", "Duration", 14, 24, FREQ), "R2\tFrequency-Drug Arg1:T3 Arg2:T1"]
    write(tmp_path / "gold", "a", gold, text=FREQ)
    write(tmp_path / "pred", "a", pred, text=FREQ)
    for mode in ("any", "n2c2"):
        scores = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", schema="n2c2_2018", lenient_matching=mode)
        row = scores["rels_per_type"]["Frequency-Drug"]
        assert (row["pred"], row["gold"]) == (2, 1)
        assert (row["strict_p"], row["strict_r"], row["strict_f"]) == approx3(0.5, 1.0, 2 / 3)
        assert (row["lenient_p"], row["lenient_r"]) == (pytest.approx(0.5), pytest.approx(1.0))
        assert list(scores["rels_per_type"]) == ["Frequency-Drug"]
        assert prf(scores, "rels_strict") == approx3(0.5, 1.0, 2 / 3)  # overall = the one row
        assert scores["ents_per_type"]["Duration"]["strict_p"] == 0.0
        assert scores["outside_schema"] == {"ents": {}, "rels": {"Frequency-Drug": 1}}


def test_score_prints_where_outside_schema_predictions_are_counted(tmp_path):
    write(tmp_path / "gold", "a", [t("T1", "Drug", 0, 7, FREQ)], text=FREQ)
    write(tmp_path / "pred", "a", [t("T1", "Drug", 0, 7, FREQ)], text=FREQ)
    result = runner.invoke(app, ["score", str(tmp_path / "gold"), str(tmp_path / "pred"), "--schema", "n2c2_2018"])
    assert result.exit_code == 0, result.output
    assert "an R line whose argument types it does not allow in its relation type's row" in result.output


# --- visiting order, nothing to score, discontinuous entities ---------------------------------------

ABC = "aaaaa     bbbbb     ccccc"  # A [0,5), B [10,15), C [20,25)


def test_official_visiting_order_is_the_ann_line_order(tmp_path):
    # gold Drug A, B, C; pred lines in this order: T1 [12,14) (overlaps B), T2 [0,2) (A), T3 [4,11) (A and B),
    #   T4 [22,24) (C)
    # file order (official): T1 claims B, T2 claims A, T3 hits claimed A/B -> dropped, T4 claims C
    #   -> lenient kept 3, tp 3: P = 3/3, R = 3/3 = 1.0
    # sorted by position (before): T2 claims A, T3 dropped (claims B), T1 dropped, T4 claims C
    #   -> kept 2, tp 2: P = 1.0, R = 2/3 = 0.67
    write(tmp_path / "gold", "a", [t("T1", "Drug", 0, 5, ABC), t("T2", "Drug", 10, 15, ABC), t("T3", "Drug", 20, 25, ABC)], text=ABC)
    write(tmp_path / "pred", "a", [t("T1", "Drug", 12, 14, ABC), t("T2", "Drug", 0, 2, ABC), t("T3", "Drug", 4, 11, ABC), t("T4", "Drug", 22, 24, ABC)], text=ABC)
    scores = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching="n2c2")
    assert prf(scores, "ents_lenient") == (1.0, 1.0, 1.0)
    assert prf(scores, "ents_strict") == (0.0, 0.0, 0.0)


def test_nothing_to_score(tmp_path):
    # no relation on either side: the official script prints 0.0 (n2c2); "any" keeps spaCy's None
    write(tmp_path / "gold", "a", TEN[:1])
    write(tmp_path / "pred", "a", TEN[:1])
    official = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching="n2c2")
    assert prf(official, "rels_strict") == (0.0, 0.0, 0.0) and prf(official, "rels_lenient") == (0.0, 0.0, 0.0)
    assert prf(score_brat_dirs(tmp_path / "gold", tmp_path / "pred"), "rels_strict") == (None, None, None)


def test_discontinuous_entities_the_official_script_misreads(tmp_path):
    # T1: 4 fragments over [0,25) (the official script reuses the previous line's type/offsets);
    # T2: fragments listed out of order "10 15;0 5" (official: [10,5)); we score the covering spans
    # [0,25) and [0,15): gold = pred -> strict 1.0, and one note per entity per side
    lines = [
        "T1\tDrug 0 2;3 5;10 12;20 25\taa aa bb ccccc",
        "T2\tDosage 10 15;0 5\tbbbbb aaaaa",
    ]
    write(tmp_path / "gold", "a", lines, text=ABC)
    write(tmp_path / "pred", "a", lines, text=ABC)
    scores = score_brat_dirs(tmp_path / "gold", tmp_path / "pred", lenient_matching="n2c2")
    assert prf(scores, "ents_strict") == (1.0, 1.0, 1.0)
    differs = [n for n in scores["notes"] if n["kind"] == "official_differs"]
    assert [(n["ann_id"], n["line"]) for n in differs] == [("T1", 1), ("T2", 2)] * 2
    assert "4 fragments" in differs[0]["message"] and "[10,5)" in differs[1]["message"]


# --- the command ------------------------------------------------------------------------------


def test_score_command_prints_its_policy_and_the_repeated_lines(tmp_path):
    write(tmp_path / "gold", "a", TEN)
    write(tmp_path / "gold", "b", TEN[:3])
    write(tmp_path / "pred", "a", TEN + [t("T11", "Drug", 60, 64), t("T12", "Drug", 60, 64)], txt=False)
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["score", str(tmp_path / "gold"), str(tmp_path / "pred"), "--matching", "n2c2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "policy: counting: n2c2" in text and "skip (not scored, as the official script)" in text
    assert "1 gold document(s) without a prediction .ann, skipped: b" in text
    assert "scored 1 of 2 gold documents" in text
    assert "repeated annotation lines: 0 in gold, 1 in predictions" in text
    assert "a.ann:12 [T12]: repeats T11 (line 11)" in text
    assert "oops" not in text  # ids and line numbers, never note text
    overall = next(line for line in text.splitlines() if "Overall (micro)" in line)
    # gold 10, pred 12; P = 10/12, R = 1, F = 10/11 (strict and lenient)
    assert overall.split()[2:] == ["10", "12", "0.8333", "1.0000", "0.9091", "0.8333", "1.0000", "0.9091"]
    assert json.loads(out.read_text())["policy"]["missing_pred"] == "skip"
    result = runner.invoke(app, ["score", str(tmp_path / "gold"), str(tmp_path / "pred"), "--missing-pred", "miss"])
    assert result.exit_code == 0 and "miss (all their gold items count as missed)" in result.output
    assert "quote n2c2 2018 figures with --matching n2c2" in result.output


def test_policy_rejects_unknown_values():
    with pytest.raises(BratError):
        ScoringPolicy("partial", "skip")
    assert ScoringPolicy("n2c2", "skip").to_dict()["nothing_to_score"] == 0.0
