"""The clinical tokenizer (rules, registry, serialisation) and gold-boundary splitting."""
import functools

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.util import registry

from spacy_softprompt.data.tokenizer import build_clinical_tokenizer, split_at_boundaries

CASES = [
    ("25mg", ["25", "mg"]),
    ("10mg/kg/day", ["10", "mg", "/", "kg", "/", "day"]),
    ("0.5mcg", ["0.5", "mcg"]),
    ("12mmHg", ["12", "mmHg"]),
    ("3x daily", ["3", "x", "daily"]),
    ("x3 days", ["x", "3", "days"]),
    ("q6h", ["q6h"]),
    ("q4-6h prn", ["q4-6h", "prn"]),
    ("b.i.d. p.o.", ["b.i.d.", "p.o."]),
    ("5-10 mg", ["5", "-", "10", "mg"]),
    ("5–10", ["5", "–", "10"]),
    ("BP 140/90", ["BP", "140/90"]),
    ("200/µL", ["200", "/", "µL"]),
    ("μg/24 h", ["μg", "/", "24", "h"]),
    ("ratio=0.58", ["ratio", "=", "0.58"]),
    ("BMI>40", ["BMI", ">", "40"]),
    ("≥30", ["≥", "30"]),
    ("(=3)", ["(", "=", "3", ")"]),
    ("5 mL.", ["5", "mL", "."]),
    ("vitamin D.", ["vitamin", "D", "."]),
    ("5 mmol/l.", ["5", "mmol", "/", "l", "."]),
    ("ataxia.1 A", ["ataxia", ".", "1", "A"]),
    ("fibers4", ["fibers", "4"]),
    ("risk[4]", ["risk", "[", "4", "]"]),
    ("agents(warfarin)", ["agents", "(", "warfarin", ")"]),
    ("(COX)-deficient", ["(", "COX", ")", "-", "deficient"]),
    ("(ILD)/Pneumonitis", ["(", "ILD", ")", "/", "Pneumonitis"]),
    ("hydrate*;chlorpropamide", ["hydrate", "*", ";", "chlorpropamide"]),
    ("HIV+", ["HIV", "+"]),
    ("CD4+", ["CD4", "+"]),
    ("chemo- and", ["chemo", "-", "and"]),
    ("-Currently", ["-", "Currently"]),
    ("RashRash", ["Rash", "Rash"]),
    ("HbA1c 7%", ["HbA1c", "7", "%"]),
    ("COVID-19", ["COVID-19"]),
    ("e.g. Dr. Smith", ["e.g.", "Dr.", "Smith"]),
    ("B12 T2DM CYP2D6", ["B12", "T2DM", "CYP2D6"]),
    ("a\r\nb", ["a", "\r\n", "b"]),
]


@pytest.mark.parametrize("text,tokens", CASES)
def test_clinical_rules(nlp, text, tokens):
    assert [t.text for t in nlp(text)] == tokens


def test_text_is_preserved(nlp):
    text = "Pt  got 25mg\tq6h;\r\nBP>140/90 — 5–10µg/kg ± 2 💊"
    assert nlp(text).text == text


def test_registered_and_resolvable_from_config(tmp_path):
    from spacy.lang.en import English

    assert registry.tokenizers.get("spacy_softprompt.ClinicalTokenizer.v1")
    config = {"nlp": {"tokenizer": {"@tokenizers": "spacy_softprompt.ClinicalTokenizer.v1"}}}
    nlp = English.from_config(config)
    assert [t.text for t in nlp("25mg q6h")] == ["25", "mg", "q6h"]


def test_rules_serialise_with_the_pipeline(tmp_path):
    from spacy.lang.en import English

    nlp = English.from_config({"nlp": {"tokenizer": {"@tokenizers": "spacy_softprompt.ClinicalTokenizer.v1"}}})
    nlp.to_disk(tmp_path / "pipe")
    plain = spacy.blank("en")
    plain.tokenizer.from_disk(tmp_path / "pipe" / "tokenizer")  # stored patterns, no factory needed
    for text, tokens in CASES:
        assert [t.text for t in plain(text)] == tokens, text
    loaded = spacy.load(tmp_path / "pipe")
    assert [t.text for t in loaded("10mg/kg x3 b.i.d.")] == ["10", "mg", "/", "kg", "x", "3", "b.i.d."]


def test_bytes_round_trip():
    nlp = spacy.blank("en")
    tok = build_clinical_tokenizer(nlp)
    other = spacy.blank("en").tokenizer
    other.from_bytes(tok.to_bytes())
    assert [t.text for t in other("25mg q6h (=3)")] == ["25", "mg", "q6h", "(", "=", "3", ")"]


def edges(doc):
    return [(t.idx, t.idx + len(t.text)) for t in doc]


def test_split_at_boundaries_splits_inside_tokens(nlp):
    doc = nlp("aspirinum and ibuprofen")
    assert [t.text for t in doc] == ["aspirinum", "and", "ibuprofen"]
    assert split_at_boundaries(doc, [7, 0, 9, 14, 17, 23]) == 2
    assert [t.text for t in doc] == ["aspirin", "um", "and", "ibu", "profen"]
    assert doc.text == "aspirinum and ibuprofen"
    assert [t.whitespace_ for t in doc] == ["", " ", " ", "", ""]


def test_split_several_cuts_in_one_token(nlp):
    doc = nlp("abcdefgh xyz")
    assert split_at_boundaries(doc, [2, 5, 5, 7]) == 1
    assert [t.text for t in doc] == ["ab", "cde", "fg", "h", "xyz"]


def test_split_multibyte_characters(nlp):
    text = "naïve💊drugµg end"
    doc = nlp(text)
    pill = text.index("💊")
    micro = text.index("µ")
    split_at_boundaries(doc, [pill, pill + 1, micro])
    assert doc.char_span(pill, pill + 1).text == "💊"
    assert doc.char_span(0, pill).text == "naïve"
    assert doc.char_span(pill + 1, micro).text == "drug"
    assert doc.text == text


def test_split_ignores_whitespace_and_outside_offsets(nlp):
    doc = nlp("one two")
    before = edges(doc)
    assert split_at_boundaries(doc, [3, 4, -1, 99, 7]) == 0
    assert edges(doc) == before
    empty = nlp("")
    assert split_at_boundaries(empty, [0, 1]) == 0


def test_split_whitespace_token(nlp):
    doc = nlp("a   b")
    assert [t.text for t in doc] == ["a", "  ", "b"]
    split_at_boundaries(doc, [3])
    assert [t.text for t in doc] == ["a", " ", " ", "b"] and doc.text == "a   b"


def test_split_keeps_existing_entities_and_spans_valid(nlp):
    doc = nlp("aspirin81")
    split_at_boundaries(doc, [7])
    span = doc.char_span(0, 7, label="Drug")
    doc.ents = [span]
    assert [(e.text, e.label_) for e in doc.ents] == [("aspirin", "Drug")]


# --------------------------------------------------- whitespace cases and the cache
def _with_whitespace_cases(nlp):
    """The tokenizer as built before the plain whitespace special cases were left out."""
    from spacy.lang.en import English

    reference = build_clinical_tokenizer(nlp)
    rules = dict(reference.rules)
    rules.update({k: v for k, v in English.Defaults.tokenizer_exceptions.items() if k.isspace()})
    reference.rules = rules
    return reference


@functools.lru_cache(maxsize=1)
def _tokenizer_pair():
    nlp = spacy.blank("en")
    return build_clinical_tokenizer(nlp), _with_whitespace_cases(nlp)


def _token_rows(doc):
    return [(t.text, t.whitespace_, t.norm_, t.idx) for t in doc]


def test_no_plain_whitespace_special_cases():
    from spacy_softprompt.data.tokenizer import clinical_rules

    rules = clinical_rules()
    assert not {"\n", "\t", " "} & set(rules)
    assert "\xa0" in rules  # it sets a norm, so it stays


@given(st.lists(st.sampled_from(["\n", "\n\n", " ", "  ", "\t", "\xa0", " \n", "25mg", "q6h", "b.i.d.", "(BP)",
                                 "can't", "'s", "Dr.", "x3", "5-10", "aspirin.", "HIV+", "e.g.", "a;b"]),
                max_size=30))
@settings(max_examples=200, deadline=None)
def test_same_tokens_as_with_whitespace_cases(pieces):
    fast, reference = _tokenizer_pair()
    text = "".join(pieces)
    assert _token_rows(fast(text)) == _token_rows(reference(text))
    assert _token_rows(fast(text)) == _token_rows(fast(text))  # second pass: from the cache


def test_same_tokens_on_the_corpora(corpora_dir):
    fast, reference = _tokenizer_pair()
    texts = sorted(corpora_dir.rglob("*.txt"))
    assert texts, f"no brat texts under {corpora_dir}"
    for path in texts:
        text = path.read_text(encoding="utf-8")
        first = _token_rows(fast(text))
        assert first == _token_rows(reference(text)), path
        assert first == _token_rows(fast(text)), path
