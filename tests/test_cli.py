"""CLI: every command has --help; convert -> export -> score round trip on a real corpus."""
import json

import pytest
from typer.testing import CliRunner

from spacy_softprompt.cli import app

runner = CliRunner()
COMMANDS = ["convert", "export", "score", "evaluate", "compare", "annotate", "assets", "train", "bench", "study", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert ("benchmarks:" if command == "bench" else "Usage") in result.output


def test_bench_passes_help_on_to_the_script(capfd):
    result = runner.invoke(app, ["bench", "scaling", "--help"])
    assert result.exit_code == 0
    out = capfd.readouterr().out
    assert "scaling_bench.py" in out and "--corpus-notes" in out


def _run_main(argv, capsys):
    from spacy_softprompt.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr()


def test_user_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    corpus = tmp_path / "brat"
    corpus.mkdir()
    (corpus / "a.txt").write_text("aspirin", encoding="utf8")
    (corpus / "a.ann").write_text("T1\tMedication 0 7\taspirin\n", encoding="utf8")
    code, captured = _run_main(["convert", str(corpus), str(tmp_path / "o.spacy"), "--schema", "n2c2_2019"], capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines  # the traceback hint is in --help, not after every error
    assert lines[0].startswith("error: ") and "n2c2_2019" in lines[0] and "Traceback" not in captured.err


@pytest.mark.parametrize(
    "fmt,schema,expected",
    [("jsonl", "n2c2_2018", "applies to brat files"), ("brat", "no_such_schema", "no_such_schema")],
)
def test_annotate_checks_its_output_schema_before_loading_the_model(tmp_path, capsys, fmt, schema, expected):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("aspirin", encoding="utf8")
    out = tmp_path / ("out.jsonl" if fmt == "jsonl" else "out")
    code, captured = _run_main(["annotate", str(tmp_path / "no_model"), str(notes), str(out), "--format", fmt, "--schema", schema], capsys)
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not out.exists()


def test_traceback_hint_is_in_the_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "SPACY_SOFTPROMPT_TRACEBACK" in " ".join(result.output.split())


def test_missing_model_is_one_line(tmp_path, capsys):
    code, captured = _run_main(["evaluate", str(tmp_path / "no_model"), str(tmp_path / "dev.spacy")], capsys)
    assert code == 2 and captured.err.startswith("error: ") and "Traceback" not in captured.err


def test_traceback_on_request(tmp_path, monkeypatch):
    from spacy_softprompt.cli import main
    from spacy_softprompt.data.errors import BratError

    monkeypatch.setenv("SPACY_SOFTPROMPT_TRACEBACK", "1")
    with pytest.raises(BratError):
        main(["convert", str(tmp_path), str(tmp_path / "o.spacy"), "--schema", "n2c2_2019"])


def test_convert_export_score_round_trip(corpora_dir, tmp_path):
    dev = corpora_dir / "maccrobat2020" / "dev"
    out = tmp_path / "dev.spacy"
    result = runner.invoke(app, ["convert", str(dev), str(out), "--schema", "maccrobat_medication", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "r.json").read_text())
    assert stats["documents"] == 30
    result = runner.invoke(app, ["export", str(out), str(tmp_path / "brat")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "brat").glob("*.ann"))) == 30
    metrics = tmp_path / "m.json"
    result = runner.invoke(app, ["score", str(dev), str(tmp_path / "brat"), "--schema", "maccrobat_medication", "--output", str(metrics)])
    assert result.exit_code == 0, result.output
    scores = json.loads(metrics.read_text())
    for key in ("ents_strict_f", "ents_lenient_f", "rels_strict_f", "rels_lenient_f"):
        assert scores[key] == 1.0, key
    assert scores["missing_predictions"] == []
    assert set(scores["ents_per_type"]) >= {"Medication", "Dosage", "Route"}
    # the same predictions as .ann files only, counted as the official script: still 1.0, nothing
    # outside the schema, no line counted twice (a relation is mapped once, not by rule and by label)
    for txt in (tmp_path / "brat").glob("*.txt"):
        txt.unlink()
    result = runner.invoke(app, ["score", str(dev), str(tmp_path / "brat"), "-s", "maccrobat_medication", "--matching", "n2c2", "-o", str(metrics)])
    assert result.exit_code == 0, result.output
    assert "policy: counting: n2c2" in result.output
    official = json.loads(metrics.read_text())
    for key in ("ents_strict_f", "ents_lenient_f", "rels_strict_f", "rels_lenient_f"):
        assert official[key] == 1.0, key
    assert (official["n_scored"], official["repeated"], official["outside_schema"]) == (30, {"gold": 0, "pred": 0}, {"ents": {}, "rels": {}})
    assert official["ents_per_type"] == scores["ents_per_type"] and official["rels_per_type"] == scores["rels_per_type"]


def test_score_counts_a_missing_prediction_as_empty(corpora_dir, tmp_path):
    dev = corpora_dir / "maccrobat2020" / "dev"
    pred = tmp_path / "pred"
    pred.mkdir()
    first = sorted(dev.glob("*.txt"))[0]
    (pred / first.name).write_text(first.read_text(encoding="utf8"), encoding="utf8")
    (pred / (first.stem + ".ann")).write_text((dev / (first.stem + ".ann")).read_text(encoding="utf8"), encoding="utf8")
    result = runner.invoke(app, ["score", str(dev), str(pred), "--output", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "m.json").read_text())
    assert scores["ents_strict_p"] == 1.0 and scores["ents_strict_r"] < 0.2
    assert len(scores["missing_predictions"]) == 29


def test_assets_links_from_mirror_and_explains_without_one(corpora_dir, tmp_path):
    result = runner.invoke(app, ["assets", "maccrobat2020", str(tmp_path / "a" / "mac"), "--mirror", str(corpora_dir)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "mac" / "dev").is_dir()
    result = runner.invoke(app, ["assets", "maccrobat2020", str(tmp_path / "b")])
    assert result.exit_code != 0
    assert "--mirror" in str(result.exception)


@pytest.mark.parametrize("extra, expected", [([], 16), (["--gpu-id", "0"], 32), (["--gpu-id", "0", "-b", "8"], 8)])
def test_annotate_batch_size_defaults_to_more_notes_on_a_gpu(tmp_path, monkeypatch, extra, expected):
    """On a GPU a backbone call of fewer than ~30 windows is launch-bound: annotate batches 32 notes there
    unless told otherwise, 16 on a CPU."""
    import spacy

    import spacy_softprompt.annotate as annotate_module
    import spacy_softprompt.cli as cli

    seen = {}

    class Report:
        written, skipped_existing, failed = 1, 0, []

    monkeypatch.setattr(cli, "_load_model", lambda model, gpu_id=-1: spacy.blank("en"))
    monkeypatch.setattr(annotate_module, "annotate", lambda nlp, source, output, **kw: seen.update(kw) or Report())
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("aspirin", encoding="utf8")
    result = runner.invoke(app, ["annotate", "m", str(notes), str(tmp_path / "out")] + extra)
    assert result.exit_code == 0, result.output
    assert seen["batch_size"] == expected
