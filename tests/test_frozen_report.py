"""scripts/frozen_report.py: the frozen-backbone table from per-seed metrics files."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("frozen_report", REPO / "scripts" / "frozen_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(tp_per_doc, n_docs=20, gold=10, relations=True):
    """A metrics file whose every document has ``gold`` gold and predicted entities,
    ``tp_per_doc`` of them right (strict and lenient alike)."""
    row = [gold, tp_per_doc, gold, tp_per_doc]
    per_doc = {"ids": [f"d{i}" for i in range(n_docs)], "ents_strict": [row] * n_docs, "ents_lenient": [row] * n_docs}
    f1 = tp_per_doc / gold
    metrics = {"ents_strict_f": f1, "ents_lenient_f": f1, "per_doc": per_doc}
    if relations:
        per_doc["rels_strict"] = per_doc["rels_lenient"] = [row] * n_docs
        metrics["rels_strict_f"] = metrics["rels_lenient_f"] = f1
    return metrics


def test_table_gives_mean_sd_and_interval_against_the_reference(tmp_path):
    report = _load_script()
    folder = tmp_path / "frozen"
    folder.mkdir(parents=True)
    for seed, tp in enumerate([5, 6, 7]):
        (folder / f"soft-frozen-seed{seed}.json").write_text(json.dumps(_metrics(tp)))
    for seed, tp in enumerate([8, 8]):
        (folder / f"peft-prefix-seed{seed}.json").write_text(json.dumps(_metrics(tp, relations=False)))
    (folder / "runs").mkdir()
    (folder / "runs" / "peft-prefix-seed0.json").write_text(json.dumps({"parameters": {"trainable": 25, "total": 1000}}))
    table = report.build(folder, ["soft-frozen", "peft-prefix", "soft-lora"], "soft-frozen")
    rows = {r["system"]: r for r in table["rows"]}
    assert set(rows) == {"soft-frozen", "peft-prefix"}  # a system without files is left out
    frozen, prefix = rows["soft-frozen"], rows["peft-prefix"]
    assert frozen["ents_strict"]["mean"] == pytest.approx(0.6) and frozen["ents_strict"]["sd"] == pytest.approx(0.1)
    assert frozen["vs_reference"] is None and frozen["seeds"] == ["0", "1", "2"]
    assert prefix["parameters"] == {"trainable": 25, "total": 1000}
    # every document pairs 8/10 against the pooled 18/30: +0.2 exactly, in every resample
    boot = prefix["vs_reference"]["ents_strict"]
    assert boot["observed"] == pytest.approx(0.2) and boot["low"] == pytest.approx(0.2) and boot["high"] == pytest.approx(0.2)
    assert prefix["vs_reference"]["rels_strict"] is None  # the peer predicts no relations
    text = report.markdown(table)
    assert "| peft-prefix | 2 | 2.50% | 80.0 ± 0.0 | – | +20.0 [+20.0, +20.0] | – |" in text
    assert "| soft-frozen | 3 | – | 60.0 ± 10.0 | 60.0 ± 10.0 | – | – |" in text


def test_run_info_counts_the_trainable_part_of_a_saved_frozen_pipeline(tiny_megatron, tmp_path):
    import spacy

    import spacy_softprompt.architectures  # noqa: F401

    report = _load_script()
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy_softprompt.SoftPromptTransformerModel.v1", "name": str(tiny_megatron),
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 24, "stride": 16},
        "prompt_length": 2, "prompt_depth": "deep", "freeze_backbone": True, "init_seed": 0}})
    nlp.initialize()
    nlp.to_disk(tmp_path / "model")
    encoder = nlp.get_pipe("transformer").model.encoder
    backbone = sum(p.numel() for p in encoder.backbone.parameters())
    counts = report.pipeline_parameters(tmp_path / "model")
    # 2 prompt vectors x (key, value) x 2 layers x 32 hidden
    assert counts == {"trainable": 2 * 2 * 2 * 32, "total": backbone + 2 * 2 * 2 * 32}
