"""Pipelines saved by the code before the heads/ and mrc/ subpackages were made
(issue 15; tests/data/pre_move/make_pipelines.py, run at commit 4261fd4) load
with today's code, through today's modules, and predict what they predicted then:
registered names, saved settings and weights are all a pipeline refers to."""
import importlib.util
import json
from pathlib import Path

import pytest
import spacy

DATA = Path(__file__).parent / "data" / "pre_move"
PIPES = {
    "single_pass": {"token_ner": "spacy_softprompt.heads.", "relation_extractor": "spacy_softprompt.heads."},
    "mrc": {"mrc_ner": "spacy_softprompt.mrc.", "mrc_relations": "spacy_softprompt.mrc."},
}


def _maker():
    spec = importlib.util.spec_from_file_location("make_pipelines", DATA / "make_pipelines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_saved_pipelines_are_small():
    assert sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file()) < 1_000_000


@pytest.mark.parametrize("name", sorted(PIPES))
def test_a_pipeline_saved_before_the_move_predicts_the_same(name):
    expected = json.loads((DATA / "expected.json").read_text(encoding="utf8"))[name]
    nlp = spacy.load(DATA / name)
    for pipe, package in PIPES[name].items():
        assert type(nlp.get_pipe(pipe)).__module__.startswith(package)
    got = _maker().predictions(nlp, [doc["text"] for doc in expected])
    assert len(got) == len(expected)
    assert any(doc["ents"] for doc in expected) and any(doc["relations"] for doc in expected)
    for doc, want in zip(got, expected):
        assert doc["ents"] == want["ents"], doc["text"]
        assert doc["spans"] == want["spans"], doc["text"]
        assert doc["span_scores"] == (None if want["span_scores"] is None else pytest.approx(want["span_scores"], abs=1e-4))
        assert [r[:3] for r in doc["relations"]] == [r[:3] for r in want["relations"]], doc["text"]
        for r, w in zip(doc["relations"], want["relations"]):
            assert r[3] == (None if w[3] is None else pytest.approx(w[3], abs=1e-4))
