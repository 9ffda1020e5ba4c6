"""CLI: every command has --help; convert -> export -> score round trip on a real corpus."""
import json

import pytest
from typer.testing import CliRunner

from spacy_softprompt.cli import app

runner = CliRunner()
COMMANDS = ["convert", "export", "score", "evaluate", "annotate", "assets", "train", "bench", "study", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


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
