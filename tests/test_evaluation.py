"""evaluate: runs a pipeline on gold texts and scores it end to end."""
import json

import spacy
from spacy.tokens import DocBin

from spacy_softprompt.evaluation import evaluate_model
from spacy_softprompt.testing import toy_docs


def _ruler_pipeline(path, patterns):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(patterns)
    nlp.to_disk(path)


def test_evaluate_model_scores_entities_end_to_end(tmp_path):
    gold = tmp_path / "gold.spacy"
    DocBin(store_user_data=True, docs=toy_docs()).to_disk(gold)
    # Finds every drug and one of three strengths; predicts no relations.
    _ruler_pipeline(
        tmp_path / "model",
        [{"label": "Drug", "pattern": w} for w in ("aspirin", "heparin", "warfarin")]
        + [{"label": "Strength", "pattern": [{"LOWER": "10"}, {"LOWER": "mg"}]}],
    )
    scores = evaluate_model(str(tmp_path / "model"), gold, tmp_path / "m.json")
    # gold: 3 Drug + 3 Strength + 3 Frequency = 9; predicted 4, all correct
    assert scores["ents_strict_p"] == 1.0
    assert abs(scores["ents_strict_r"] - 4 / 9) < 1e-9
    assert scores["rels_strict_r"] == 0.0
    assert scores["ents_per_type"]["Drug"]["strict_f"] == 1.0
    assert scores["n_docs"] == 3 and scores["n_words"] > 0
    assert json.loads((tmp_path / "m.json").read_text())["ents_strict_p"] == 1.0
    # where the time went (a slow evaluation can be traced to a component or to one-time costs)
    split = scores["seconds_per_component"]
    assert list(split) == ["tokenizer", "entity_ruler"]
    assert 0 <= scores["seconds_first_batch"] <= scores["seconds"] + 1e-3
    assert sum(split.values()) <= scores["seconds"] + 1e-3
    assert scores["n_pred_entities"] == 4 and scores["n_pred_relations"] == 0
