"""The peer baselines (benchmarks/baseline_hf_tokcls.py, baseline_spacy_cnn.py): BIO
encoding round trip, windows, and tiny end-to-end runs that write their results JSON."""
import json
import sys
from pathlib import Path

import pytest

from spacy_softprompt.annotations import set_entities
from spacy_softprompt.testing import write_toy_corpus

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import baseline_common  # noqa: E402
import baseline_hf_tokcls as hf  # noqa: E402
import baseline_spacy_cnn as cnn  # noqa: E402

sys.path.remove(str(BENCHMARKS))

TEXT = "Aspirin 10 mg po daily ;\n\nwarfarin heparin started for deep vein thrombosis ."


@pytest.fixture(scope="module")
def clinical_nlp():
    return baseline_common.clinical_nlp()


def entity_doc(nlp, entities):
    doc = nlp.make_doc(TEXT)
    spans = [doc.char_span(TEXT.index(s), TEXT.index(s) + len(s), label=label) for label, s in entities]
    assert all(spans), "test entities must fall on token boundaries"
    set_entities(doc, spans)
    return doc


ENTITIES = [
    ("Medication", "Aspirin"),
    ("Dosage", "10 mg"),           # multi-token
    ("Route", "po"),
    ("Frequency", "daily"),       # adjacent to an entity of another type
    ("Medication", "warfarin"),   # adjacent entities of the same type
    ("Medication", "heparin"),
    ("Disease_disorder", "deep vein thrombosis"),  # three tokens, ends before the final "."
]


def keys(doc):
    return {(s.start_char, s.end_char, s.label_) for s in doc.ents}


def test_bio_round_trip_reproduces_the_entities(clinical_nlp):
    doc = entity_doc(clinical_nlp, ENTITIES)
    tags = hf.bio_tags(doc)
    assert tags[doc.ents[4].start] == tags[doc.ents[5].start] == "B-Medication"
    assert set(hf.bio_to_entities(doc, tags)) == keys(doc)
    assert len(hf.bio_to_entities(doc, tags)) == len(ENTITIES)


def test_decoding_follows_the_hugging_face_convention(clinical_nlp):
    doc = clinical_nlp.make_doc("a b c d e")
    # I- without B- starts an entity; I- of another type starts a new one; None (no wordpiece) is skipped
    tags = ["I-X", "I-X", "I-Y", "O", "I-Y"]
    assert hf.bio_to_entities(doc, tags) == [(0, 3, "X"), (4, 5, "Y"), (8, 9, "Y")]
    assert hf.bio_to_entities(doc, ["B-X", None, "I-X", "O", "B-X"]) == [(0, 5, "X"), (8, 9, "X")]


def test_windows_respect_the_budget_and_prefer_sentence_ends():
    pieces = [1, 2, 1, 1, 3, 1, 1, 2, 1]
    breaks = [False, False, False, True, False, False, False, False, False]
    bounds = hf.window_bounds(pieces, 6, breaks)
    assert bounds[0] == (0, 4)  # full at token 5 (6 pieces), cut after the break at token 3
    assert [b[0] for b in bounds[1:]] == [b[1] for b in bounds[:-1]] and bounds[-1][1] == len(pieces)
    assert all(sum(pieces[s:e]) <= 6 for s, e in bounds)


def test_windows_carry_the_tags_on_first_wordpieces(clinical_nlp, tiny_bert):
    """Encoding into small windows, then reading the labels back, gives the entities again."""
    from transformers import AutoTokenizer

    doc = entity_doc(clinical_nlp, ENTITIES)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    labels = hf.label_list([doc])
    label2id = {label: i for i, label in enumerate(labels)}
    windows = hf.make_windows([doc], tokenizer, 8, label2id)
    assert len(windows) > 2 and all(len(w.input_ids) <= 8 for w in windows)
    tags = [None] * len(doc)
    for w in windows:
        for k, pos in enumerate(w.first_piece):
            if pos is not None:
                tags[w.token_start + k] = labels[w.labels[pos]]
    assert sum(label != -100 for w in windows for label in w.labels) == sum(t is not None for t in tags)
    assert set(hf.bio_to_entities(doc, tags)) == keys(doc)


@pytest.fixture
def toy_corpus(tmp_path):
    return write_toy_corpus(tmp_path / "toy.spacy")


def test_hf_baseline_runs_one_epoch_and_writes_its_report(toy_corpus, tiny_bert, tmp_path):
    out = tmp_path / "hf.json"
    assert hf.main(["--train", str(toy_corpus), "--dev", str(toy_corpus), "--backbone", str(tiny_bert),
                    "--epochs", "1", "--limit-docs", "2", "--batch-size", "2", "--max-length", "16",
                    "--threads", "1", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"settings", "labels", "data", "epochs", "best_epoch", "best", "wall_s"} <= set(report)
    assert report["data"]["train"]["docs"] == report["data"]["dev"]["docs"] == 2
    assert report["best_epoch"] == 1 and len(report["epochs"]) == 1
    for key in baseline_common.ENTITY_KEYS:
        assert 0.0 <= report["best"][key] <= 1.0
    assert report["settings"]["lr"] == 2e-4


def test_cnn_config_is_spacys_accuracy_config_without_vectors():
    config, changes = cnn.make_config("clinical", Path("log.jsonl"))
    assert config["paths"]["vectors"] is None
    assert config["components"]["tok2vec"]["model"]["embed"]["include_static_vectors"] is False
    assert config["components"]["tok2vec"]["model"]["encode"]["depth"] == 8  # the accuracy preset
    assert config["nlp"]["tokenizer"] == cnn.CLINICAL_TOKENIZER
    assert len(changes) == 4


@pytest.mark.slow
def test_cnn_baseline_trains_a_few_steps_and_scores_dev(toy_corpus, tmp_path):
    out = tmp_path / "cnn.json"
    assert cnn.main(["--train", str(toy_corpus), "--dev", str(toy_corpus), "--max-steps", "2",
                     "--eval-frequency", "1", "--threads", "1", "--workdir", str(tmp_path / "work"),
                     "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["steps"] == 2 and [e["step"] for e in report["evaluations"]] == [0, 1, 2]
    assert report["best_step"] in (0, 1, 2)
    for checkpoint in ("best", "last"):
        for key in baseline_common.ENTITY_KEYS:
            assert 0.0 <= report[checkpoint][key] <= 1.0
    assert report["data"]["dev"]["entities"] == 9
