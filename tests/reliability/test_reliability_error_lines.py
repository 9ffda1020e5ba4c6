"""Issue 22, item 4: every user-facing failure is one line ``error: <what, which
file, which line or component>`` with exit status 2; inputs and options are
checked before the model loads; a damaged file in any component folder of a
saved pipeline names the component and the file."""
import shutil

import pytest
from annotate_helpers import make_nlp, write_jsonl
from reliability_helpers import build_pipeline

from spacy_softprompt.cli import main
from spacy_softprompt.safe_io import OutputLock, lock_path_for

NO_MODEL = "/nonexistent/model/folder"


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory, tiny_megatron):
    """The shipped single-pass pipeline (transformer, ner, relation_extractor) on a tiny encoder, saved."""
    path = tmp_path_factory.mktemp("trained") / "pipeline"
    build_pipeline(tiny_megatron).to_disk(path)
    return path


@pytest.fixture
def notes(tmp_path):
    return write_jsonl(tmp_path / "in.jsonl", {"a": "aspirin 5 mg daily", "b": "heparin"})


# --- inputs and options, before any model loads ----------------------------------------------

def test_missing_input_folder_is_named_before_the_model_loads(tmp_path, capsys):
    line = run_cli(["annotate", NO_MODEL, tmp_path / "no_such_notes", tmp_path / "out"], capsys)
    assert "no_such_notes" in line and "no such file or folder" in line and "model" not in line


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_input_of_the_wrong_kind_is_named(tmp_path, capsys, engine):
    csv = tmp_path / "notes.csv"
    csv.write_text("id,text\n1,aspirin\n", encoding="utf8")
    line = run_cli(["annotate", NO_MODEL, csv, tmp_path / "out", "--engine", engine], capsys)
    assert "notes.csv" in line and ".jsonl" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,expected", [
    (["--format", "xml"], "--format 'xml'"),
    (["--format", "xml", "--engine", "ray"], "--format 'xml'"),
    (["--format", "parquet"], "needs --engine ray"),
    (["--engine", "spark"], "--engine 'spark'"),
    (["--batch-size", "0"], "--batch-size 0"),
])
def test_bad_options_are_one_line_before_the_model_loads(notes, tmp_path, capsys, args, expected):
    line = run_cli(["annotate", NO_MODEL, notes, tmp_path / "out", *args], capsys)
    assert expected in line


def test_jsonl_output_onto_a_folder_and_brat_onto_a_file(notes, tmp_path, capsys):
    (tmp_path / "folder.jsonl").mkdir()
    assert "is a folder" in run_cli(["annotate", NO_MODEL, notes, tmp_path / "folder.jsonl", "-f", "jsonl"], capsys)
    (tmp_path / "file").write_text("x")
    assert "is a file" in run_cli(["annotate", NO_MODEL, notes, tmp_path / "file"], capsys)


def test_evaluate_checks_the_gold_file_before_the_model(tmp_path, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("{}", encoding="utf8")
    line = run_cli(["evaluate", NO_MODEL, gold], capsys)
    assert "gold.jsonl" in line and ".spacy" in line
    line = run_cli(["evaluate", NO_MODEL, tmp_path / "missing.spacy"], capsys)
    assert "missing.spacy" in line


def test_evaluate_with_a_damaged_spacy_file_names_it(tmp_path, capsys):
    model = tmp_path / "blank"
    make_nlp().to_disk(model)
    gold = tmp_path / "gold.spacy"
    gold.write_bytes(b"\x00garbage")
    line = run_cli(["evaluate", model, gold], capsys)
    assert "gold.spacy" in line and "not a readable .spacy file" in line


# --- a damaged saved pipeline ---------------------------------------------------------------------

def _truncate(path, keep=60):
    path.write_bytes(path.read_bytes()[:keep])


DAMAGE = {
    "relation_extractor_model": (lambda d: _truncate(d / "relation_extractor" / "model"), "relation_extractor", "relation_extractor/model"),
    "token_ner_model": (lambda d: _truncate(d / "token_ner" / "model"), "token_ner", "token_ner/model"),
    "token_ner_cfg": (lambda d: (d / "token_ner" / "cfg").write_text("{oops"), "token_ner", "token_ner/cfg"),
    "transformer_model": (lambda d: _truncate(d / "transformer" / "model", 500), "transformer", "transformer/model"),
    "tokenizer": (lambda d: _truncate(d / "tokenizer"), "tokenizer", "tokenizer"),
    "strings_deleted": (lambda d: (d / "vocab" / "strings.json").unlink(), "vocab", "strings.json"),
    "relation_extractor_cfg": (lambda d: (d / "relation_extractor" / "cfg").write_text("{oops"), "relation_extractor", "relation_extractor/cfg"),
    "transformer_cfg": (lambda d: (d / "transformer" / "cfg").write_text("[1, 2"), "transformer", "transformer/cfg"),
    "vectors": (lambda d: _truncate(d / "vocab" / "vectors", 20), "vocab", "vocab/vectors"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_component_file_names_the_component_and_the_file(saved_pipeline, notes, tmp_path, capsys, case):
    damage, component, file = DAMAGE[case]
    broken = tmp_path / "broken"
    shutil.copytree(saved_pipeline, broken)
    damage(broken)
    line = run_cli(["annotate", broken, notes, tmp_path / "out", "-f", "jsonl", "-q"], capsys)
    assert f"'{component}'" in line and file in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("name,content,expected", [
    ("config.cfg", "[nlp\nlang = \n garbage ===", "not a valid config"),
    ("meta.json", "{not json", "not valid JSON"),
])
def test_garbage_config_or_meta_names_the_file(saved_pipeline, notes, tmp_path, capsys, name, content, expected, engine):
    broken = tmp_path / "broken"
    shutil.copytree(saved_pipeline, broken)
    (broken / name).write_text(content, encoding="utf8")
    line = run_cli(["annotate", broken, notes, tmp_path / "out", "--engine", engine], capsys)  # ray: before a cluster starts
    assert str(broken / name) in line and expected in line and "<string>" not in line


# --- outputs ----------------------------------------------------------------------------------------

def test_malformed_line_in_an_existing_jsonl_output_names_file_and_line(notes, tmp_path, capsys):
    model = tmp_path / "blank"
    make_nlp().to_disk(model)
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "text": "aspirin"}\nnot json at all\n{"id": "c", "text": "x"}\n', encoding="utf8")
    line = run_cli(["annotate", model, notes, out, "-f", "jsonl", "-q"], capsys)
    assert f"{out}:2" in line and "not an annotate record" in line


def test_a_locked_output_and_duplicate_ids_are_one_line(notes, tmp_path, capsys):
    model = tmp_path / "blank"
    make_nlp().to_disk(model)
    with OutputLock(lock_path_for(tmp_path / "out", False)):
        line = run_cli(["annotate", model, notes, tmp_path / "out", "-q"], capsys)
    assert "another annotate run is writing here" in line and "pid" in line
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf8")
    line = run_cli(["annotate", model, dup, tmp_path / "out2", "-q"], capsys)
    assert "'a' appears twice" in line and "line 1 and dup.jsonl line 2" in line


def test_other_commands_name_the_file_they_cannot_read(tmp_path, capsys):
    bad_spacy = tmp_path / "notes.spacy"
    bad_spacy.write_text("not a DocBin", encoding="utf8")
    line = run_cli(["export", bad_spacy, tmp_path / "brat"], capsys)
    assert "notes.spacy" in line and "not a readable .spacy file" in line
    bad_json = tmp_path / "m.json"
    bad_json.write_text("{oops", encoding="utf8")
    line = run_cli(["compare", bad_json, "--vs", bad_json], capsys)
    assert "m.json" in line and "not a readable metrics JSON" in line
    line = run_cli(["convert", tmp_path / "no_brat", tmp_path / "o.spacy"], capsys)
    assert "no_brat" in line
