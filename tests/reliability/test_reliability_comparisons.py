"""Issue 22, item 5: comparisons that should not be made are refused or flagged.
``compare`` refuses metric files whose per-document gold counts differ (naming the
first document); ``evaluate`` warns when no label of the pipeline occurs in the gold."""
import json

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_softprompt.cli import main
from spacy_softprompt.compare import compare_files
from spacy_softprompt.evaluation import evaluate_model
from spacy_softprompt.per_doc import per_doc_record
from spacy_softprompt.scoring import N2C2Counts, count_document
from spacy_softprompt.testing import toy_docs

GOLD_A = [[(0, 5, "Drug"), (10, 15, "Dose")], [(0, 4, "Drug")], [(3, 9, "Drug")]]
#: the same documents annotated with another schema: other spans on document n2
GOLD_B = [[(0, 5, "Drug"), (10, 15, "Dose")], [(0, 4, "Drug"), (6, 9, "Route"), (11, 14, "Route")], [(3, 9, "Drug")]]


def _metrics(path, gold, predictions, ids=("n1", "n2", "n3")):
    counts = [count_document({"entities": g}, {"entities": p}) for g, p in zip(gold, predictions)]
    total = N2C2Counts()
    for c in counts:
        total += c
    path.write_text(json.dumps(dict(total.scores(), per_doc=per_doc_record(list(ids), counts))), encoding="utf8")
    return path


def test_compare_refuses_files_scored_against_different_gold(tmp_path, capsys):
    a = _metrics(tmp_path / "a.json", GOLD_A, GOLD_A)
    a2 = _metrics(tmp_path / "a2.json", GOLD_A, [g[:1] for g in GOLD_A])
    b = _metrics(tmp_path / "b.json", GOLD_B, [g[:1] for g in GOLD_B])
    with pytest.raises(ValueError) as info:
        compare_files([a, a2], [b], n_resamples=50)
    message = str(info.value)
    assert "'n2'" in message and "a.json" in message and "b.json" in message and "1 vs 3" in message
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(a), "--vs", str(b), "--resamples", "50"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "not scored against the same gold" in err
    # same gold, other predictions: compared as before
    same = _metrics(tmp_path / "same.json", GOLD_A, [[]] + GOLD_A[1:])
    assert compare_files([a], [same], n_resamples=50)["metrics"]["ents_strict"]["bootstrap"] is not None


def _pipeline(path, labels):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": label, "pattern": word} for label, word in labels])
    nlp.to_disk(path)
    return path


def test_evaluate_warns_when_no_label_of_the_pipeline_is_in_the_gold(tmp_path, capsys):
    gold = tmp_path / "gold.spacy"
    DocBin(store_user_data=True, docs=toy_docs()).to_disk(gold)  # Drug, Strength, Frequency
    other = _pipeline(tmp_path / "other", [("Medication", "aspirin"), ("Dosage", "mg")])
    scores = evaluate_model(str(other), gold)
    assert len(scores["warnings"]) == 1 and "Medication" in scores["warnings"][0] and "Drug" in scores["warnings"][0]
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", str(other), str(gold)])  # a warning, not an error: the scores are still printed
    assert stop.value.code == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: no label of the pipeline") and "strict F" in captured.out

    silent = _pipeline(tmp_path / "silent", [("Medication", "nothing-matches-this")])  # predicts nothing: its labels count
    assert "Medication" in evaluate_model(str(silent), gold)["warnings"][0]

    fitting = _pipeline(tmp_path / "fitting", [("Drug", "aspirin"), ("Dosage", "mg")])
    assert "warnings" not in evaluate_model(str(fitting), gold)
