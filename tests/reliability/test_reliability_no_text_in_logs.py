"""No note text in logs: conversion of broken annotations, the CLI, nlp.pipe and
annotate, all with logging at DEBUG, never show more than a 40-character
excerpt of a note (checked with a sentinel sentence)."""
import json
import logging
import warnings

import pytest
from reliability_helpers import assert_no_excerpt_longer_than, build_pipeline

SENTINEL = "Zebulon Quixote of 17 Lighthouse Lane takes forty milligrams of aspirin every Tuesday night"
NOTE = f"History: {SENTINEL}.\nPlan: continue aspirin 10 mg daily.\n"
LIMIT = 40


SPAN = (NOTE.index(SENTINEL), NOTE.index(SENTINEL) + len(SENTINEL))
TOKEN = SENTINEL.replace(" ", "_")  # the sentinel as one whitespace-free field

#: broken .ann lines, each carrying the sentinel somewhere; ids of the form "name"
BAD_LINES = {
    "valid_entity_over_the_sentinel": f"T1\tDrug {SPAN[0]} {SPAN[1]}\t{SENTINEL}",
    "offsets_past_the_end": f"T2\tDrug {SPAN[0]} 99999\t{SENTINEL}",
    "span_text_disagrees": f"T3\tDrug {SPAN[0]} {SPAN[0] + 20}\t{SENTINEL}",
    "reversed_offsets": f"T4\tDrug {SPAN[1]} {SPAN[0]}\t{SENTINEL}",
    "not_brat_at_all": f"this line is not brat at all: {SENTINEL}",
    "relation_without_roles": f"R1\tStrength-Drug {SENTINEL}",
    "relation_to_missing_ids": "R1\tStrength-Drug Arg1:T99 Arg2:T1",
    "attribute_extra_words": f"A1\tNegated T77 {SENTINEL}",
    "note_without_target": f"#1\t{SENTINEL}",
    "note_on_an_entity": f"#1\tAnnotatorNotes T1\t{SENTINEL}",
    "third_field_on_a_relation": f"R1\tStrength-Drug Arg1:T1 Arg2:T1\t{SENTINEL}",
    "duplicate_id": "T1\tDrug 0 7\tHistory\nT1\tDrug 0 7\tHistory",
    "long_id": f"T{TOKEN}\tDrug 0 5\tHisto",
    # these used to quote a whole field of the line in the message (fixed with errors.shorten):
    "sentence_instead_of_offsets": f"T5\t{SENTINEL}",
    "sentence_after_the_type": f"T5\tDrug {SENTINEL}\tx",
    "event_argument_without_role": f"E1\tEvent:T42 {TOKEN}",
    "event_trigger_is_a_long_token": f"E1\tEvent:{TOKEN}",
    "relation_argument_is_a_long_token": f"R1\tStrength-Drug Arg1:{TOKEN} Arg2:T1",
    "attribute_target_is_a_long_token": f"A1\tNegated {TOKEN}",
    "note_target_is_a_long_token": f"#1\tAnnotatorNotes {TOKEN}\tx",
    "equivalence_member_is_a_long_token": f"*\tEquiv {TOKEN} T1",
}


def _corpus(root, lines, extra_files=False):
    corpus = root / "brat"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "note1.txt").write_text(NOTE, encoding="utf8")
    (corpus / "note1.ann").write_text("\n".join(lines) + "\n", encoding="utf8")
    if extra_files:
        latin1 = ("Café " + SENTINEL + " naïve").encode("latin-1")  # not UTF-8
        (corpus / "sub" / "note2.txt").write_bytes(latin1)
        (corpus / "sub" / "note2.ann").write_text(f"T1\tDrug 0 4\t{SENTINEL}\n", encoding="utf8")
        (corpus / "orphan.ann").write_text(f"T1\tDrug 0 5\t{SENTINEL}\n", encoding="utf8")
        crlf = NOTE.replace("\n", "\r\n")
        (corpus / "note3.txt").write_bytes(crlf.encode("utf8"))
        (corpus / "note3.ann").write_text(f"T1\tDrug 0 {len(crlf)}\t{SENTINEL}\n", encoding="utf8")
    return corpus


def _check(blob):
    assert_no_excerpt_longer_than(blob, SENTINEL, LIMIT)
    assert_no_excerpt_longer_than(blob.replace("_", " "), SENTINEL, LIMIT)


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("spacy_softprompt", "spacy_softprompt.data", "spacy", "transformers", "spacy_transformers"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caplog, caught


def _everything(caplog, caught, capfd, *extra):
    out, err = capfd.readouterr()
    messages = [r.getMessage() for r in caplog.records]
    formatted = [caplog.handler.format(r) for r in caplog.records]
    return "\n".join(messages + formatted + [str(w.message) for w in caught] + [out, err] + [str(e) for e in extra])


def _convert_everything(corpus, tmp_path, tokenizer):
    from spacy_softprompt.data.errors import BratError
    from spacy_softprompt.data.readers import convert_brat_dir

    stats = convert_brat_dir(corpus, tmp_path / "out.spacy", nlp=tokenizer)
    strict_error = ""
    try:
        convert_brat_dir(corpus, tmp_path / "strict.spacy", nlp=tokenizer, strict=True)
    except BratError as err:
        strict_error = str(err)
    return [stats, json.dumps(stats.to_dict()), strict_error]


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_conversion_of_a_broken_line(name, tmp_path, debug_logs, capfd, clinical_nlp):
    caplog, caught = debug_logs
    corpus = _corpus(tmp_path, [BAD_LINES[name]])
    blob = _everything(caplog, caught, capfd, *_convert_everything(corpus, tmp_path, clinical_nlp))
    _check(blob)


def test_conversion_of_a_broken_corpus(tmp_path, debug_logs, capfd, clinical_nlp):
    caplog, caught = debug_logs
    corpus = _corpus(tmp_path, list(BAD_LINES.values()), extra_files=True)
    blob = _everything(caplog, caught, capfd, *_convert_everything(corpus, tmp_path, clinical_nlp))
    assert len(caplog.records) >= 8, "the broken annotations were not reported at all"
    assert "note1" in blob and "note2" in blob and "orphan" in blob  # issues name the files...
    _check(blob)  # ...but never show the note


def test_cli_convert_with_report(tmp_path, debug_logs, capfd):
    from typer.testing import CliRunner

    from spacy_softprompt.cli import app

    caplog, caught = debug_logs
    corpus = _corpus(tmp_path, list(BAD_LINES.values()), extra_files=True)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["convert", str(corpus), str(tmp_path / "out.spacy"), "--report", str(report)])
    assert result.exit_code == 0, result.output
    blob = _everything(caplog, caught, capfd, result.output, report.read_text(encoding="utf8"))
    _check(blob)


@pytest.fixture(scope="module")
def nlp(tiny_megatron):
    return build_pipeline(tiny_megatron)


def test_pipe_and_annotate_at_debug(nlp, tmp_path, debug_logs, capfd):
    from spacy_softprompt.annotate import ERRORS_FILE, annotate

    caplog, caught = debug_logs
    texts = [NOTE, NOTE.replace("\n", "\r\n"), (SENTINEL + " ") * 50]
    for text, doc in zip(texts, nlp.pipe(texts)):
        assert doc.text == text
    notes = tmp_path / "notes"
    notes.mkdir()
    for i, text in enumerate(texts):
        (notes / f"n{i}.txt").write_text(text, encoding="utf8")
    (notes / "bad.txt").write_bytes(SENTINEL.encode("utf16"))  # unreadable as UTF-8
    (notes / "empty.txt").write_text("", encoding="utf8")
    long_limit = nlp.max_length
    nlp.max_length = len(NOTE) + 10  # the repeated sentinel note now fails inside spaCy
    try:
        report = annotate(nlp, notes, tmp_path / "out", batch_size=8, progress=False)
    finally:
        nlp.max_length = long_limit
    assert report.failed and report.written >= 2
    errors = (tmp_path / "out" / ERRORS_FILE)
    errors_text = errors.read_text(encoding="utf8") if errors.exists() else ""
    blob = _everything(caplog, caught, capfd, json.dumps(report.to_dict()), errors_text)
    _check(blob)
