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
    assert prefix["parameters"] == {"trainable": 25, "total": 1000}  # not a PEFT report: entity path unknown
    # every document pairs 8/10 against the pooled 18/30: +0.2 exactly, in every resample
    boot = prefix["vs_reference"]["ents_strict"]
    assert boot["observed"] == pytest.approx(0.2) and boot["low"] == pytest.approx(0.2) and boot["high"] == pytest.approx(0.2)
    assert prefix["vs_reference"]["rels_strict"] is None  # the peer predicts no relations
    text = report.markdown(table)
    assert "| peft-prefix | 2 | – | 2.50% | – | – | – | 80.0 ± 0.0 | – | +20.0 [+20.0, +20.0] | – |" in text
    assert "| soft-frozen | 3 | – | – | – | – | – | 60.0 ± 10.0 | 60.0 ± 10.0 | – | – |" in text


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
    prompts = 2 * 2 * 2 * 32
    assert counts == {"trainable": prompts, "total": backbone + prompts, "entity_path": prompts,
                      "parts": {"transformer": prompts}}


def test_entity_path_and_training_costs_in_the_table(tmp_path):
    """The entity path of a PEFT peer is all it trains; ours comes from --run-info, read from any
    seed that has it; step time and memory are relative to the unfrozen run of bench training."""
    report = _load_script()
    folder = tmp_path / "frozen"
    (folder / "runs").mkdir(parents=True)
    for seed in (0, 1):
        (folder / f"soft-frozen-seed{seed}.json").write_text(json.dumps(_metrics(6)))
        (folder / f"peft-prefix-seed{seed}.json").write_text(json.dumps(_metrics(5, relations=False)))
    (folder / "runs" / "soft-frozen-seed0.json").write_text(json.dumps({"parameters": {"trainable": 700, "total": 10_000}}))
    (folder / "runs" / "soft-frozen-seed1.json").write_text(json.dumps(
        {"parameters": {"trainable": 700, "total": 10_000, "entity_path": 100}}))
    (folder / "runs" / "peft-prefix-seed0.json").write_text(json.dumps(
        {"benchmark": "baseline_peft_prefix", "parameters": {"trainable": 98, "total": 9_000}}))
    training = tmp_path / "training.json"
    training.write_text(json.dumps({"backbones": {"minilm": {"runs": {
        "unfrozen P=20 deep": {"step_s": 2.0, "peak_above_init_mb": 800.0},
        "frozen P=5 deep": {"step_s": 1.0, "peak_above_init_mb": 200.0},
        "frozen P=20 deep": {"step_s": 1.5, "peak_above_init_mb": 300.0}}}}}))
    table = report.build(folder, ["soft-frozen", "peft-prefix"], "soft-frozen", training)
    rows = {r["system"]: r for r in table["rows"]}
    assert rows["soft-frozen"]["parameters"]["entity_path"] == 100
    assert rows["peft-prefix"]["parameters"]["entity_path"] == 98
    assert rows["soft-frozen"]["training_cost"]["time_vs_soft"] == pytest.approx(0.5)
    assert rows["soft-frozen"]["training_cost"]["memory_vs_soft"] == pytest.approx(0.25)
    assert rows["peft-prefix"]["training_cost"] is None
    text = report.markdown(table)
    assert "| soft-frozen | 2 | – | 7.00% | 100 | 0.50× | 0.25× | 60.0 ± 0.0 |" in text
    assert "| peft-prefix | 2 | – | 1.09% | 98 | – | – | 50.0 ± 0.0 |" in text


def test_run_info_leaves_the_relation_head_out_of_the_entity_path(tiny_bert, tmp_path):
    import spacy
    from spacy.training import Example

    import spacy_softprompt  # noqa: F401
    from spacy_softprompt.testing import toy_docs

    report = _load_script()
    nlp = spacy.blank("en")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy_softprompt.SoftPromptTransformerModel.v1", "name": str(tiny_bert),
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 12, "stride": 9},
        "prompt_length": 3, "prompt_depth": "deep", "freeze_backbone": True, "init_seed": 0}})
    nlp.add_pipe("token_ner")
    nlp.add_pipe("relation_extractor")
    nlp.initialize(lambda: [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs(nlp)])
    nlp.to_disk(tmp_path / "model")
    counts = report.pipeline_parameters(tmp_path / "model")
    encoder = nlp.get_pipe("transformer").model.encoder
    prompts = sum(p.numel() for p in encoder.parameters() if p.requires_grad)

    def head_size(name):
        return sum(int(node.get_param(p).size) for node in nlp.get_pipe(name).model.walk()
                   if not node.name.startswith("transformer-listener") for p in node.param_names if node.has_param(p))

    ner, rel = head_size("token_ner"), head_size("relation_extractor")
    assert ner > 0 and rel > 0
    assert counts["parts"] == {"transformer": prompts, "token_ner": ner, "relation_extractor": rel}
    assert counts["trainable"] == prompts + ner + rel
    assert counts["entity_path"] == prompts + ner


def test_convergence_of_each_run_from_its_curve_or_epochs(tmp_path):
    """Our runs' curves (train --curve) and the PEFT reports' epochs go through the study's
    rule: a run still gaining >= 0.5 points in its last quarter is not converged."""
    report = _load_script()
    folder = tmp_path / "frozen"
    (folder / "runs").mkdir(parents=True)
    for seed in (0, 1):
        (folder / f"soft-frozen-seed{seed}.json").write_text(json.dumps(_metrics(6)))
    (folder / "peft-prefix-seed0.json").write_text(json.dumps(_metrics(5, relations=False)))
    flat = [{"step": s, "score": 0.5, "ents_strict_f": f} for s, f in ((0, 0.0), (200, 0.50), (400, 0.57), (600, 0.572), (800, 0.571))]
    rising = [{"step": s, "score": 0.5, "ents_strict_f": f} for s, f in ((0, 0.0), (200, 0.40), (400, 0.50), (600, 0.55), (800, 0.58))]
    (folder / "runs" / "soft-frozen-seed0.curve.json").write_text(json.dumps(flat))
    (folder / "runs" / "soft-frozen-seed1.curve.json").write_text(json.dumps(rising))
    epochs = [{"epoch": e, "ents_strict_f": f} for e, f in ((1, 0.1), (2, 0.4), (3, 0.52), (4, 0.50), (5, 0.51), (6, 0.50), (7, 0.49), (8, 0.50))]
    (folder / "runs" / "peft-prefix-seed0.json").write_text(json.dumps(
        {"benchmark": "baseline_peft_prefix", "parameters": {"trainable": 98, "total": 9_000}, "epochs": epochs}))
    table = report.build(folder, ["soft-frozen", "peft-prefix"], "soft-frozen")
    rows = {r["system"]: r for r in table["rows"]}
    frozen = {r["seed"]: r for r in rows["soft-frozen"]["convergence"]}
    assert frozen["0"]["converged"] is True and frozen["0"]["best_step"] == 600
    assert frozen["1"]["converged"] is False and frozen["1"]["late_gain"] == pytest.approx(0.03)  # 0.58 - best up to step 600
    prefix = rows["peft-prefix"]["convergence"][0]
    assert prefix["converged"] is True and prefix["best_step"] == 3
    text = report.markdown(table)
    assert "| soft-frozen | 2 | 1/2 (best at 600, 800) |" in text
    (folder / "runs" / "soft-frozen-seed1.curve.json").unlink()
    rows = {r["system"]: r for r in report.build(folder, ["soft-frozen"], "soft-frozen")["rows"]}
    assert "| soft-frozen | 2 | 1/1 (best at 600; 1 without a curve) |" in report.markdown({"reference": "soft-frozen", "rows": list(rows.values())})
    assert "| peft-prefix | 1 | 1/1 (best at 3) |" in text


def test_curves_figure_from_stored_runs(tmp_path):
    pytest.importorskip("matplotlib")
    report = _load_script()
    folder = tmp_path / "frozen"
    (folder / "runs").mkdir(parents=True)
    assert report.plot_curves(folder, ["soft-frozen"], tmp_path / "none.png") is None  # nothing stored
    (folder / "soft-frozen-seed0.json").write_text(json.dumps(_metrics(6)))
    (folder / "runs" / "soft-frozen-seed0.curve.json").write_text(json.dumps(
        [{"step": 0, "score": 0.0, "ents_strict_f": 0.0}, {"step": 200, "score": 0.4, "ents_strict_f": 0.5}]))
    figure = report.plot_curves(folder, ["soft-frozen", "peft-prefix"], tmp_path / "curves.png")
    assert figure == tmp_path / "curves.png" and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_frozen_table_is_the_stored_runs_table():
    """README's frozen table is written from benchmarks/results/frozen: stale figures fail here
    (rerun: python scripts/frozen_report.py benchmarks/results/frozen --readme README.md)."""
    report = _load_script()
    folder = REPO / "benchmarks" / "results" / "frozen"
    table = report.build(folder, list(report.DESCRIPTIONS), "soft-frozen", REPO / "benchmarks" / "results" / "training.json")
    readme = (REPO / "README.md").read_text(encoding="utf8")
    section = readme.split(report.README_START, 1)[1].split(report.README_END, 1)[0]
    assert section.strip() == report.readme_table(table).strip()
    assert any(row["system"] == "soft-frozen" for row in table["rows"])


def test_readme_writer_replaces_only_the_marked_table(tmp_path):
    report = _load_script()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{report.README_START}\nold table\n{report.README_END}\nafter\n")
    table = {"reference": "soft-frozen", "rows": []}
    report.write_readme(readme, table)
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith(f"{report.README_END}\nafter\n") and "old table" not in text
    unmarked = tmp_path / "unmarked.md"
    unmarked.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no frozen-table markers"):
        report.write_readme(unmarked, table)
    assert unmarked.read_text() == "no markers here\n"


FAKE_PYTHON = """#!/usr/bin/env bash
# records each call; writes what frozen_table.sh expects of the real commands
echo "$*" >> "$CALLS"
prev=""
for arg in "$@"; do
  case $prev in
    --output|--metrics-output) [[ $1 != -m || $2 != spacy_softprompt || $3 != train ]] && echo '{}' > "$arg" ;;
  esac
  prev=$arg
done
[[ "$*" == *"--run-info"* ]] && echo '{}'
exit 0
"""


@pytest.mark.parametrize(
    "system, expected",
    [
        ("soft-frozen-p20", "-m spacy_softprompt train configs/tok_soft-frozen_cpu.cfg"),
        ("soft-frozen", "-m spacy_softprompt train configs/tok_soft-frozen_cpu.cfg"),
        ("peft-prefix7", "benchmarks/baseline_peft.py --method prefix --virtual-tokens 7"),
    ],
)
def test_frozen_table_script_maps_each_system_to_its_run(tmp_path, system, expected):
    """``<strategy>-p<N>`` trains the strategy's config with prompt_length N; plain names keep the
    config's own length; ``peft-prefix<N>`` passes N virtual tokens."""
    import subprocess

    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    results = tmp_path / "results"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "CALLS": str(calls), "RESULTS": str(results),
           "SEEDS": "3", "SYSTEMS": system}
    done = subprocess.run(["bash", str(REPO / "scripts" / "frozen_table.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    first = lines[0]
    assert first.startswith(expected), first
    assert "--seed 3" in first or "--system.seed 3" in first
    override = "--components.transformer.model.prompt_length"
    assert (override in first) == (system == "soft-frozen-p20")
    if system == "soft-frozen-p20":
        assert f"{override} 20" in first
    assert (results / f"{system}-seed3.json").is_file()
    assert lines[-1] == f"scripts/frozen_report.py {results}"


@pytest.mark.parametrize("system, config, override", [
    ("soft-frozen", "tok_soft-frozen_cpu.cfg", None),
    ("soft-frozen-p20", "tok_soft-frozen_cpu.cfg", 20),
])
def test_stored_frozen_runs_match_the_shipped_prompt_length(system: str, config: str, override):
    """The table's rows are what the configs ship: a stored run's trained prompt (deep: keys and
    values per layer, MiniLM-L6: 6 layers of width 384) has the config's prompt length, or the
    ``-p<N>`` system's override (frozen_table.sh). Moving a config's prompt length without
    retraining (or renaming) its stored runs fails here."""
    from spacy.util import load_config

    model = load_config(REPO / "configs" / config)["components"]["transformer"]["model"]
    length = override or model["prompt_length"]
    assert model["prompt_depth"] == "deep"
    runs = sorted((REPO / "benchmarks" / "results" / "frozen" / "runs").glob(f"{system}-seed*.json"))
    runs = [r for r in runs if not r.name.endswith(".curve.json")]
    if not runs:
        pytest.skip(f"no stored {system} runs")
    for run in runs:
        parameters = json.loads(run.read_text())["parameters"]
        assert parameters["parts"]["transformer"] == 2 * 6 * 384 * length, run.name
