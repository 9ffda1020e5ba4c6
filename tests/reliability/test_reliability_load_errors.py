"""Bad models, configs and schemas fail with a clear error of our own (or spaCy's
config validation error naming the bad value), never with a traceback from deep
inside torch or transformers."""
import gc
import json
import shutil
import traceback

import pytest
import spacy
from confection import ConfigValidationError
from reliability_helpers import assert_raised_by_us, build_pipeline, pipeline_config
from spacy.util import load_model_from_config

from spacy_softprompt.data.errors import BratError
from spacy_softprompt.encoder import (
    BackboneChecksumError,
    BackboneNotFoundError,
    CorruptModelError,
    clear_backbone_cache,
)
from spacy_softprompt.testing import make_random_encoder

MODEL = "components.transformer.model"


@pytest.fixture(scope="module")
def prompt_only(tmp_path_factory):
    """A prompt-only pipeline (save_backbone = false) and the folder of its own backbone copy."""
    root = tmp_path_factory.mktemp("prompt_only")
    backbone = make_random_encoder(root / "backbone", "megatron-bert", seed=0)
    nlp = build_pipeline(backbone, **{f"{MODEL}.save_backbone": False})
    nlp.to_disk(root / "pipeline")
    del nlp
    return root / "pipeline", backbone


def _fresh_load(path, **kwargs):
    gc.collect()
    clear_backbone_cache()
    return spacy.load(path, **kwargs)


def test_prompt_only_pipeline_loads_with_its_backbone(prompt_only):
    pipeline, _ = prompt_only
    nlp = _fresh_load(pipeline)
    assert nlp.pipe_names == ["transformer", "token_ner", "relation_extractor"]
    nlp("aspirin 10 mg daily")


def test_backbone_with_another_checksum_is_refused(prompt_only, tmp_path):
    pipeline, backbone = prompt_only
    other = tmp_path / "backbone"
    shutil.copytree(backbone, other)
    make_random_encoder(other, "megatron-bert", seed=1)  # same shape and files, other weights
    with pytest.raises(BackboneChecksumError) as info:
        _fresh_load(pipeline, config={"components": {"transformer": {"model": {"name": str(other)}}}})
    message = str(info.value)
    assert "SHA-256" in message and str(other) in message and "retrain" in message
    assert_raised_by_us(info.value, "spacy_softprompt/encoder/backbone.py")


def test_missing_backbone_names_every_place_tried(prompt_only, tmp_path):
    pipeline, backbone = prompt_only
    moved = tmp_path / "moved_pipeline"
    shutil.copytree(pipeline, moved)
    hidden = backbone.with_name("backbone_hidden")
    backbone.rename(hidden)
    try:
        with pytest.raises(BackboneNotFoundError) as info:
            _fresh_load(moved)
    finally:
        hidden.rename(backbone)
    message = str(info.value)
    assert "could not load the backbone" in message and str(backbone) in message
    assert "components.transformer.model.name" in message
    assert_raised_by_us(info.value, "spacy_softprompt/encoder/backbone.py")


# --- configs ----------------------------------------------------------------------------------

BAD_VALUES = [
    ("prompt_depth", "sideways", "prompt_depth must be one of"),
    ("prompt_init", "magic", "prompt_init must be one of"),
    ("prompt_length", -3, "prompt_length must be >= 0"),
    ("mixed_precision_dtype", "float8", "mixed_precision_dtype must be one of"),
    ("prompt_names", [], "prompt_names must be a non-empty list"),
]


@pytest.mark.parametrize("key,value,expected", BAD_VALUES, ids=["prompt_depth", "prompt_init", "prompt_length", "mixed_precision_dtype", "prompt_names"])
def test_unknown_strategy_value_is_a_clear_error(tiny_megatron, key, value, expected):
    cfg = pipeline_config(tiny_megatron, **{f"{MODEL}.{key}": value})
    with pytest.raises(ValueError) as info:
        load_model_from_config(cfg, auto_fill=True, validate=True)
    message = str(info.value)
    assert expected in message and (repr(value) in message or str(value) in message), message
    assert_raised_by_us(info.value, "spacy_softprompt/encoder/layer.py")


def test_prompt_only_save_of_an_unfrozen_backbone_is_refused(tiny_megatron):
    cfg = pipeline_config(tiny_megatron, "tok_soft_cpu.cfg", **{f"{MODEL}.save_backbone": False})
    with pytest.raises(ValueError, match="save_backbone = false .* needs freeze_backbone = true"):
        load_model_from_config(cfg, auto_fill=True, validate=True)


@pytest.mark.parametrize(
    "key,value",
    [("prompt_style", "sideways"), ("prompt_lenght", 20)],
    ids=["unknown_argument", "misspelt_argument"],
)
def test_unknown_architecture_argument_is_named(tiny_megatron, key, value):
    cfg = pipeline_config(tiny_megatron, **{f"{MODEL}.{key}": value})
    with pytest.raises(ConfigValidationError) as info:
        load_model_from_config(cfg, auto_fill=True, validate=True)
    message = str(info.value)
    # pydantic v1 (confection 0.1, spaCy 3.7): "extra fields not permitted"; confection 1.x (spaCy 3.8): "unexpected ..."
    assert key in message and ("extra fields not permitted" in message or "unexpected" in message)


@pytest.mark.parametrize("key,value", [("prompt_length", "twenty"), ("freeze_backbone", "maybe")])
def test_wrongly_typed_value_is_named(tiny_megatron, key, value):
    cfg = pipeline_config(tiny_megatron, **{f"{MODEL}.{key}": value})
    with pytest.raises(ConfigValidationError) as info:
        load_model_from_config(cfg, auto_fill=True, validate=True)
    assert key in str(info.value)


def test_window_too_long_for_the_prompt_is_named(tiny_megatron):
    nlp = load_model_from_config(
        pipeline_config(tiny_megatron, **{f"{MODEL}.get_spans.window": 200, f"{MODEL}.get_spans.stride": 150}),
        auto_fill=True,
        validate=True,
    )
    with pytest.raises(ValueError, match=r"window = 200 spaCy tokens is too long") as info:
        nlp.initialize()
    assert_raised_by_us(info.value, "spacy_softprompt/encoder/layer.py")


def test_saved_pipeline_with_an_edited_bad_config(prompt_only, tmp_path):
    pipeline, _ = prompt_only
    edited = tmp_path / "edited"
    shutil.copytree(pipeline, edited)
    cfg_path = edited / "config.cfg"
    text = cfg_path.read_text(encoding="utf8")
    assert 'prompt_depth = "deep"' in text
    cfg_path.write_text(text.replace('prompt_depth = "deep"', 'prompt_depth = "sideways"'), encoding="utf8")
    with pytest.raises(ValueError, match="sideways") as info:
        _fresh_load(edited)
    assert_raised_by_us(info.value, "spacy_softprompt/encoder/layer.py")


def test_load_time_override_with_a_bad_value(prompt_only):
    pipeline, _ = prompt_only
    with pytest.raises(ValueError, match="sideways"):
        _fresh_load(pipeline, config={"components": {"transformer": {"model": {"prompt_depth": "sideways"}}}})


@pytest.mark.parametrize("keep", [200, 0.5, 0.98])
def test_truncated_model_file_is_a_clear_corrupt_model_error(prompt_only, tmp_path, keep):
    pipeline, _ = prompt_only
    broken = tmp_path / "broken"
    shutil.copytree(pipeline, broken)
    model_file = broken / "transformer" / "model"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(CorruptModelError) as info:
        _fresh_load(broken)
    assert "corrupt or truncated" in str(info.value) and "reinstall" in str(info.value)
    frame_files = [f.filename for f in traceback.extract_tb(info.value.__traceback__)]
    assert not any("/torch/" in f for f in frame_files), frame_files[-3:]


def test_damaged_tensor_bytes_are_a_clear_corrupt_model_error(prompt_only, tmp_path):
    """Same length, but the middle of the saved tensors overwritten."""
    pipeline, _ = prompt_only
    broken = tmp_path / "broken"
    shutil.copytree(pipeline, broken)
    model_file = broken / "transformer" / "model"
    data = bytearray(model_file.read_bytes())
    header = data.find(b"\"dtype\"")  # inside a safetensors header
    assert header > 0
    data[header - 40 : header + 40] = b"\xff" * 80
    model_file.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="corrupt or truncated"):
        _fresh_load(broken)


# --- schemas ----------------------------------------------------------------------------------

GOOD_SCHEMA = {
    "name": "tiny",
    "entities": {"Medication": "Drug", "Dosage": "Dosage"},
    "relations": {"Dosage-Drug": {"rules": [{"relation": "MODIFY", "arg1": ["Dosage"], "arg2": ["Medication"]}]}},
}


def _schema_with(**changes):
    data = json.loads(json.dumps(GOOD_SCHEMA))
    for path, value in changes.items():
        target = data
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return data


BAD_SCHEMAS = {
    "rule_names_an_unknown_source_type": (
        _schema_with(relations={"Dosage-Drug": {"rules": [{"relation": "MODIFY", "arg1": ["Dosage"], "arg2": ["Medicine"]}]}}),
        "Medicine",
    ),
    "pair_names_an_unknown_label": (
        _schema_with(relations={"Dosage-Drug": {"pairs": [["Dosage", "Drugs"]], "rules": [{"relation": "MODIFY"}]}}),
        "Drugs",
    ),
    "question_for_an_unknown_label": (_schema_with(questions={"entities": {"Route": "Which route?"}}), "Route"),
    "misspelt_key": (_schema_with(entites={"Medication": "Drug"}), "entites"),
    "unknown_rule_key": (
        _schema_with(relations={"Dosage-Drug": {"rules": [{"relation": "MODIFY", "arg1": ["Dosage"], "arg2": ["Medication"], "flip": True}]}}),
        "flip",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_SCHEMAS))
def test_schema_with_an_unknown_type_names_it(name, tmp_path):
    from spacy_softprompt.data.schema import load_schema

    data, bad = BAD_SCHEMAS[name]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(data), encoding="utf8")
    with pytest.raises(BratError) as info:
        load_schema(path)
    assert bad in str(info.value) and str(path) in str(info.value)


def test_convert_with_a_bad_schema_fails_before_writing(tmp_path):
    from spacy_softprompt.data.readers import convert_brat_dir

    corpus = tmp_path / "brat"
    corpus.mkdir()
    (corpus / "a.txt").write_text("aspirin 10 mg", encoding="utf8")
    (corpus / "a.ann").write_text("T1\tMedication 0 7\taspirin\n", encoding="utf8")
    schema = tmp_path / "bad.json"
    schema.write_text(json.dumps(BAD_SCHEMAS["rule_names_an_unknown_source_type"][0]), encoding="utf8")
    with pytest.raises(BratError, match="Medicine"):
        convert_brat_dir(corpus, tmp_path / "out.spacy", schema=str(schema))
    assert not (tmp_path / "out.spacy").exists()


def test_cli_convert_with_a_bad_schema_prints_the_error_not_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from spacy_softprompt.cli import app

    corpus = tmp_path / "brat"
    corpus.mkdir()
    (corpus / "a.txt").write_text("aspirin", encoding="utf8")
    (corpus / "a.ann").write_text("T1\tMedication 0 7\taspirin\n", encoding="utf8")
    schema = tmp_path / "bad.json"
    schema.write_text(json.dumps(BAD_SCHEMAS["misspelt_key"][0]), encoding="utf8")
    result = CliRunner().invoke(app, ["convert", str(corpus), str(tmp_path / "o.spacy"), "--schema", str(schema)])
    assert result.exit_code != 0
    assert isinstance(result.exception, (BratError, SystemExit))
    if isinstance(result.exception, BratError):
        assert "entites" in str(result.exception)


def test_unknown_schema_name_lists_the_shipped_ones():
    from spacy_softprompt.data.schema import load_schema

    with pytest.raises(BratError, match="no schema file 'n2c2_2019'.*shipped: .*maccrobat_medication"):
        load_schema("n2c2_2019")
