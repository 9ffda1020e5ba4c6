"""The peer baselines (benchmarks/baseline_hf_tokcls.py, baseline_spacy_cnn.py): BIO
encoding round trip, windows, and tiny end-to-end runs that write their results JSON
and a metrics JSON with per-document counts that `compare` pairs with `evaluate`'s."""
import json
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_softprompt.annotations import get_entities, set_entities
from spacy_softprompt.bootstrap import micro_f1
from spacy_softprompt.cli import app
from spacy_softprompt.compare import compare_files
from spacy_softprompt.per_doc import read_per_doc
from spacy_softprompt.testing import toy_docs

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import baseline_common  # noqa: E402
import baseline_hf_tokcls as hf  # noqa: E402
import baseline_peft as peft_baseline  # noqa: E402
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


def toy_docs_with_ids(limit=None):
    docs = toy_docs()[:limit]
    for i, doc in enumerate(docs):
        doc._.brat = {"doc_id": f"note-{i}"}
    return docs


@pytest.fixture
def toy_corpus(tmp_path):
    """The three toy docs with brat ids note-0..note-2 (what `evaluate` keys per_doc by)."""
    path = tmp_path / "toy.spacy"
    DocBin(store_user_data=True, docs=toy_docs_with_ids()).to_disk(path)
    return path


def evaluate_ruler(tmp_path, n_docs):
    """`python -m spacy_softprompt evaluate --output` of an entity ruler (finds the three
    drugs) on the first ``n_docs`` toy docs: the metrics file of "our" side."""
    gold = tmp_path / f"gold{n_docs}.spacy"
    DocBin(store_user_data=True, docs=toy_docs_with_ids(n_docs)).to_disk(gold)
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "Drug", "pattern": w} for w in ("aspirin", "heparin", "warfarin")])
    nlp.to_disk(tmp_path / "ruler")
    out = tmp_path / f"ruler{n_docs}.metrics.json"
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "ruler"), str(gold), "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


def check_metrics_file(path, summary, n_docs, tmp_path, name):
    """The baseline's metrics file: evaluate's entity keys, per_doc rows for every dev doc
    (keyed as evaluate keys them) adding up to the summary figures, no relation figures;
    and `compare` pairs it with an evaluate-produced file."""
    metrics = json.loads(Path(path).read_text())
    for key in baseline_common.ENTITY_KEYS:
        assert metrics[key] == pytest.approx(summary[key], abs=5e-5)  # the report rounds to 4 digits
    assert not [k for k in metrics if k.startswith("rels")]
    assert metrics["n_docs"] == n_docs and metrics["lenient_matching"] == "any"
    per_doc = metrics["per_doc"]
    assert set(per_doc) == {"ids", "ents_strict", "ents_lenient"}
    assert per_doc["ids"] == [f"note-{i}" for i in range(n_docs)]
    counts = read_per_doc(metrics)
    gold = toy_docs_with_ids(n_docs)
    # each row is its own document's: gold column = that doc's gold entities
    assert [row[2] for row in per_doc["ents_strict"]] == [len(get_entities(d)) for d in gold]
    for mode in ("strict", "lenient"):
        pred, pred_tp, gold_n, gold_tp = counts.total(f"ents_{mode}")
        assert gold_n == sum(len(get_entities(d)) for d in gold)
        assert metrics[f"ents_{mode}_p"] == pytest.approx(pred_tp / pred if pred else 0.0)
        assert metrics[f"ents_{mode}_r"] == pytest.approx(gold_tp / gold_n)
        assert metrics[f"ents_{mode}_f"] == pytest.approx(micro_f1(counts.total(f"ents_{mode}")))
    assert metrics["n_pred_entities"] == counts.total("ents_strict")[0]

    ours = evaluate_ruler(tmp_path, n_docs)
    result = CliRunner().invoke(app, ["compare", str(ours), "--vs", str(path), "--names", f"ruler,{name}",
                                      "--resamples", "200", "-o", str(tmp_path / "cmp.json")])
    assert result.exit_code == 0, result.output
    assert f"paired bootstrap over {n_docs} documents" in result.output
    assert f"rels strict F1, rels lenient F1: missing in {name} ({Path(path).name}); not compared" in result.output
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["bootstrap_error"] is None
    boot = saved["metrics"]["ents_strict"]["bootstrap"]
    assert boot["n_docs"] == n_docs and boot["low"] <= boot["observed"] <= boot["high"]
    assert boot["f1_b"] == pytest.approx(metrics["ents_strict_f"])
    assert boot["f1_a"] == pytest.approx(json.loads(ours.read_text())["ents_strict_f"])
    assert saved["metrics"]["rels_strict"]["bootstrap"] is None
    # a file on other documents is not paired
    other = evaluate_ruler(tmp_path, n_docs - 1)
    assert "documents differ" in compare_files([other], [path])["bootstrap_error"]
    return metrics


def test_default_metrics_path_sits_next_to_the_results():
    assert baseline_common.default_metrics_path(Path("r/baseline_hf_tokcls.json"), 1) == Path("r/baseline_hf_tokcls-seed1.metrics.json")
    assert baseline_common.default_metrics_path(Path("r/hf-seed2.json"), 2) == Path("r/hf-seed2.metrics.json")


def test_hf_baseline_runs_one_epoch_and_writes_its_report(toy_corpus, tiny_bert, tmp_path):
    out = tmp_path / "hf.json"  # no --metrics-output: the metrics file goes next to it
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
    metrics_path = tmp_path / "hf-seed0.metrics.json"
    assert report["metrics_file"] == str(metrics_path) == report["settings"]["metrics_output"]
    metrics = check_metrics_file(metrics_path, report["best"], 2, tmp_path, "hf")
    assert metrics["best_epoch"] == 1 and metrics["system"] == "baseline_hf_tokcls"


@pytest.mark.parametrize("method,share_below", [("prefix", 0.2), ("lora", 0.3)])
def test_peft_baseline_trains_only_its_adapters(toy_corpus, tiny_bert, tmp_path, method, share_below):
    pytest.importorskip("peft", reason="PEFT baselines need the peft extra")
    out = tmp_path / f"{method}.json"
    assert peft_baseline.main(["--method", method, "--train", str(toy_corpus), "--dev", str(toy_corpus),
                               "--backbone", str(tiny_bert), "--epochs", "2", "--limit-docs", "2", "--batch-size", "2",
                               "--max-length", "16", "--threads", "1", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["lr"] == peft_baseline.RECIPES[method]["lr"]
    assert report["settings"]["patience"] == 10
    params = report["parameters"]
    # the frozen backbone is most of the model; the classifier and the prefix / adapters train
    assert 0 < params["trainable"] < share_below * params["total"]
    metrics = check_metrics_file(tmp_path / f"{method}-seed0.metrics.json", report["best"], 2, tmp_path, method)
    assert metrics["system"] == f"baseline_peft_{method}"


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
                     "--output", str(out), "--metrics-output", str(tmp_path / "m" / "cnn-best.json")]) == 0
    report = json.loads(out.read_text())
    assert report["metrics_file"] == str(tmp_path / "m" / "cnn-best.json")
    metrics = check_metrics_file(tmp_path / "m" / "cnn-best.json", report["best"], 3, tmp_path, "cnn")
    assert metrics["pipeline"] == ["tok2vec", "ner"] and metrics["model"].endswith("model-best")
    assert report["steps"] == 2 and [e["step"] for e in report["evaluations"]] == [0, 1, 2]
    assert report["best_step"] in (0, 1, 2)
    for checkpoint in ("best", "last"):
        for key in baseline_common.ENTITY_KEYS:
            assert 0.0 <= report[checkpoint][key] <= 1.0
    assert report["data"]["dev"]["entities"] == 9
