"""medspaCy wiring: ConText attributes on extracted concepts, survives save/load, tokenizer untouched."""
import subprocess
import sys

import pytest
import spacy

pytest.importorskip(
    "medspacy",
    reason="medspaCy is not installed: the clinical extra (medspacy 1.3.1) needs spaCy < 3.8, "
    "so the spaCy 3.8 CI leg runs without it",
)

from spacy_softprompt.annotations import set_entities  # noqa: E402

TEXT = "Past medical history: diabetes.\nAssessment: Patient denies chest pain. Mother had breast cancer. Started aspirin."
CONCEPTS = [("diabetes", "Disease"), ("chest pain", "Sign"), ("breast cancer", "Disease"), ("aspirin", "Drug")]


def _annotated(nlp):
    doc = nlp.make_doc(TEXT)
    set_entities(doc, [doc.char_span(TEXT.index(w), TEXT.index(w) + len(w), label=l) for w, l in CONCEPTS])
    return doc


def _context_of(doc):
    return {
        s.text: (s._.is_negated, s._.is_historical, s._.is_family, s._.section_category) for s in doc.spans["entities"]
    }


def test_context_and_sections_on_concepts():
    nlp = spacy.blank("en")
    nlp.add_pipe("clinical_sentences")
    nlp.add_pipe("clinical_context")
    doc = _annotated(nlp)
    for _, proc in nlp.pipeline:
        doc = proc(doc)
    got = _context_of(doc)
    assert got["chest pain"][0] is True
    assert got["breast cancer"][2] is True
    assert got["diabetes"][1] is True and got["diabetes"][3] == "past_medical_history"
    assert got["aspirin"][:3] == (False, False, False)


def test_entities_from_doc_ents_when_no_span_group():
    nlp = spacy.blank("en")
    nlp.add_pipe("clinical_context", config={"sections": False})
    doc = nlp.make_doc(TEXT)
    doc.ents = [doc.char_span(TEXT.index("chest pain"), TEXT.index("chest pain") + 10, label="Sign")]
    doc = nlp.get_pipe("clinical_context")(doc)
    assert [s.text for s in doc.spans["entities"]] == ["chest pain"]
    assert doc.ents[0]._.is_negated is True


def test_saved_pipeline_loads_without_importing_medspacy_and_keeps_tokenizer(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("clinical_sentences")
    nlp.add_pipe("clinical_context")
    nlp.to_disk(tmp_path / "p")
    code = (
        "import spacy, sys; nlp = spacy.load(sys.argv[1]);"
        "assert type(nlp.tokenizer).__name__ == 'Tokenizer', type(nlp.tokenizer);"
        "doc = nlp('No fever. Aspirin 10 mg.'); print(len(list(doc.sents)), len(doc))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["2", "7"]


def test_sentence_splitter_does_not_log_note_text(caplog, capfd):
    nlp = spacy.blank("en")
    nlp.add_pipe("clinical_sentences")
    nlp("Secret patient note text. Another sentence here.")
    captured = capfd.readouterr()
    assert "Secret" not in captured.err + captured.out + caplog.text
