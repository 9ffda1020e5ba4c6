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


def test_evaluate_saves_per_document_counts_that_add_up(tmp_path):
    gold = tmp_path / "gold.spacy"
    docs = toy_docs()
    for i, doc in enumerate(docs):
        doc._.brat = {"doc_id": f"note-{i}"}
    DocBin(store_user_data=True, docs=docs).to_disk(gold)
    _ruler_pipeline(
        tmp_path / "model",
        [{"label": "Drug", "pattern": w} for w in ("aspirin", "heparin", "warfarin")]
        + [{"label": "Strength", "pattern": [{"LOWER": "10"}, {"LOWER": "mg"}]}],
    )
    scores = evaluate_model(str(tmp_path / "model"), gold, tmp_path / "m.json")
    saved = json.loads((tmp_path / "m.json").read_text())
    per_doc = saved["per_doc"]
    assert per_doc == scores["per_doc"]
    assert per_doc["ids"] == ["note-0", "note-1", "note-2"]
    # [pred, pred_tp, gold, gold_tp]: doc 0 finds aspirin and 10 mg, the others their drug only
    assert per_doc["ents_strict"] == [[2, 2, 3, 2], [1, 1, 3, 1], [1, 1, 3, 1]]
    assert per_doc["rels_strict"] == [[0, 0, 2, 0]] * 3
    # the existing keys are unchanged, and the per-document rows add up to them
    assert saved["ents_strict_r"] == scores["ents_strict_r"] == 4 / 9
    for key in ("ents_strict", "ents_lenient", "rels_strict", "rels_lenient"):
        pred, pred_tp, n_gold, gold_tp = (sum(row[i] for row in per_doc[key]) for i in range(4))
        assert (gold_tp / n_gold if n_gold else 0.0) == saved[f"{key}_r"]
        if saved[f"{key}_p"] is not None and pred:
            assert pred_tp / pred == saved[f"{key}_p"]


def test_per_doc_ids_fall_back_to_the_index():
    from spacy_softprompt.per_doc import doc_ids

    docs = toy_docs()
    assert doc_ids(docs) == ["#0", "#1", "#2"]
    docs[0]._.brat = {"doc_id": "a"}
    docs[1]._.brat = {"doc_id": "a"}
    docs[2]._.brat = {"doc_id": "c"}
    assert doc_ids(docs) == ["#0", "#1", "#2"]  # duplicates: ids not trusted


def test_evaluate_counts_each_document_once_and_reports_the_summed_scores(tmp_path, monkeypatch):
    from spacy.training import Example

    from spacy_softprompt import scoring
    from spacy_softprompt.evaluation import evaluate_pipeline

    _ruler_pipeline(
        tmp_path / "model",
        [{"label": "Drug", "pattern": w} for w in ("aspirin", "heparin")]
        + [{"label": "Strength", "pattern": [{"LOWER": "10"}, {"LOWER": "mg"}]}],
    )
    nlp = spacy.load(tmp_path / "model")
    gold = toy_docs()
    expected = scoring.score_examples([Example(nlp(doc.text), doc) for doc in gold])
    calls = []
    count_document = scoring.count_document
    monkeypatch.setattr(scoring, "count_document", lambda *a, **k: calls.append(1) or count_document(*a, **k))
    scores = evaluate_pipeline(nlp, gold)
    assert len(calls) == len(gold)  # one count per document: the totals are the per-document rows summed
    assert {key: scores[key] for key in expected} == expected
    assert scores["ents_strict_p"] == 1.0 and scores["ents_strict_r"] == 3 / 9


def test_flat_entity_scores_of_nested_predictions():
    """MRC predictions keep nested spans in the span group: the flat view (doc.ents) is scored beside
    them against the same gold; predictions that are flat already get no second score."""
    import pytest

    from spacy_softprompt.annotations import set_entities
    from spacy_softprompt.evaluation import flat_entity_scores

    nlp = spacy.blank("en")
    text = "aspirin 81 mg daily for chest pain"
    gold = nlp.make_doc(text)
    set_entities(gold, [gold.char_span(0, 7, label="Drug"), gold.char_span(8, 13, label="Strength"),
                        gold.char_span(24, 34, label="Reason")])
    nested = nlp.make_doc(text)
    spans = [nested.char_span(0, 7, label="Drug"), nested.char_span(8, 13, label="Strength"),
             nested.char_span(8, 19, label="Strength"), nested.char_span(24, 34, label="Reason"),
             nested.char_span(30, 34, label="Reason")]
    set_entities(nested, spans)  # span group: all 5; doc.ents: the 3 longest non-overlapping
    assert len(nested.spans["entities"]) == 5 and len(nested.ents) == 3
    flat = flat_entity_scores([nested], [gold])
    assert flat["n_pred_entities"] == 3
    # flat view keeps "81 mg daily" (longer) over "81 mg": 2 of 3 right; nested: 3 of 5 right
    assert flat["ents_strict_p"] == pytest.approx(2 / 3) and flat["ents_strict_r"] == pytest.approx(2 / 3)
    assert "rels_strict_f" not in flat
    from spacy_softprompt.per_doc import read_per_doc

    counts = read_per_doc(flat)  # per document, for a paired bootstrap against flat systems
    assert counts.ids == ["#0"] and set(counts.counts) == {"ents_strict", "ents_lenient"}
    exact = nlp.make_doc(text)
    set_entities(exact, [exact.char_span(0, 7, label="Drug"), exact.char_span(8, 13, label="Strength"),
                         exact.char_span(8, 19, label="Strength")])  # nested; flat view: 1 right of 2
    two = read_per_doc(flat_entity_scores([nested, exact], [gold, gold]))
    assert two.ids == ["#0", "#1"]
    assert two.counts["ents_strict"][0].tolist() == counts.counts["ents_strict"][0].tolist()
    assert two.counts["ents_strict"][1].tolist() != counts.counts["ents_strict"][0].tolist()
    plain = nlp.make_doc(text)
    set_entities(plain, [plain.char_span(0, 7, label="Drug")])
    assert flat_entity_scores([plain], [gold]) is None
