"""The brat parser and writer on hand-written documents, one feature at a time."""
from spacy_softprompt.data.brat import (
    Attribute,
    BratDocument,
    Entity,
    Equivalence,
    Event,
    Note,
    Relation,
    base_role,
    canonical,
    parse_ann,
    resolve_entity_id,
    same_annotations,
    span_text_matches,
    write_ann,
)
from spacy_softprompt.data.errors import IssueCollector

TEXT = "Patient took aspirin 81 mg daily and developed joint swelling and discomfort."


def parse(ann: str, text: str = TEXT, strict: bool = True) -> BratDocument:
    return parse_ann(ann, text, doc_id="doc", file="doc.ann", strict=strict)


def roundtrip(doc: BratDocument) -> BratDocument:
    return parse_ann(write_ann(doc), doc.text, doc_id=doc.doc_id, strict=True)


def test_text_bound_entities_and_relation():
    ann = "T1\tDrug 13 20\taspirin\nT2\tStrength 21 26\t81 mg\nR1\tStrength-Drug Arg1:T2 Arg2:T1\n"
    doc = parse(ann)
    assert doc.entities == [Entity("T1", "Drug", [(13, 20)]), Entity("T2", "Strength", [(21, 26)])]
    assert doc.entities[0].text == "aspirin" and doc.entities[0].line == 1
    assert doc.relations == [Relation("R1", "Strength-Drug", "T2", "T1")]
    assert write_ann(doc) == ann
    assert roundtrip(doc) == doc


def test_discontinuous_entity():
    start = TEXT.index("joint")
    disc = TEXT.index("discomfort")
    ann = f"T1\tAdverseReaction {start} {start + 5};{disc} {disc + 10}\tjoint discomfort\n"
    doc = parse(ann)
    ent = doc.entities[0]
    assert ent.fragments == [(start, start + 5), (disc, disc + 10)]
    assert ent.is_discontinuous and (ent.start, ent.end) == (start, disc + 10)
    assert write_ann(doc) == ann
    assert roundtrip(doc) == doc


def test_nested_and_overlapping_entities():
    s = TEXT.index("joint swelling")
    ann = (
        f"T1\tSign {s} {s + 14}\tjoint swelling\n"
        f"T2\tBody {s} {s + 5}\tjoint\n"
        f"T3\tSign {s + 6} {s + 14}\tswelling\n"
        f"T4\tSign {s + 6} {s + 14}\tswelling\n"
    )
    doc = parse(ann)
    assert [e.id for e in doc.entities] == ["T1", "T2", "T3", "T4"]
    assert roundtrip(doc) == doc


def test_events_as_arguments_and_resolution():
    ann = (
        "T1\tMedication 13 20\taspirin\n"
        "E1\tMedication:T1 \n"
        "T2\tDosage 21 26\t81 mg\n"
        "R1\tMODIFY Arg1:T2 Arg2:E1\t\n"
        "T3\tSign 47 61\tjoint swelling\n"
        "E2\tSign:T3 Cause:E1 Cause2:T2\n"
    )
    doc = parse(ann)
    assert doc.events == [Event("E1", "Medication", "T1", []), Event("E2", "Sign", "T3", [("Cause", "E1"), ("Cause2", "T2")])]
    assert doc.relations[0].arg2 == "E1"
    assert resolve_entity_id(doc, "E1") == "T1"
    assert resolve_entity_id(doc, "E2") == "T3"
    assert resolve_entity_id(doc, "T2") == "T2"
    assert resolve_entity_id(doc, "E9") is None
    assert roundtrip(doc) == doc


def test_event_cycle_does_not_hang():
    doc = BratDocument(TEXT, events=[Event("E1", "X", "E2"), Event("E2", "X", "E1")])
    assert resolve_entity_id(doc, "E1") is None


def test_base_role_strips_repeat_numbers():
    assert base_role("Effect2") == "Effect"
    assert base_role("Effect") == "Effect"
    assert base_role("Arg1") == "Arg"
    assert base_role("12") == "12"


def test_attributes_with_multi_word_and_missing_values():
    ann = (
        "T1\tDrug 13 20\taspirin\n"
        "A1\tUMLS-Preferred-Name T1 Acetylsalicylic acid (drug)\n"
        "A2\tNegated T1\n"
        "M3\tSpeculation T1\n"
        "A4\tNote T1 \n"
    )
    doc = parse(ann)
    assert doc.attributes == [
        Attribute("A1", "UMLS-Preferred-Name", "T1", "Acetylsalicylic acid (drug)"),
        Attribute("A2", "Negated", "T1", None),
        Attribute("M3", "Speculation", "T1", None),
        Attribute("A4", "Note", "T1", ""),
    ]
    assert roundtrip(doc) == doc


def test_notes_and_equivalences_and_unknown_lines():
    ann = (
        "T1\tDrug 13 20\taspirin\n"
        "T2\tDrug 13 20\taspirin\n"
        "#1\tAnnotatorNotes T1\tA note\twith a tab inside\n"
        "*\tEquiv T1 T2\n"
        "N1\tReference T1 Wikipedia:1234\tAspirin\n"
    )
    doc = parse(ann)
    assert doc.notes == [Note("#1", "AnnotatorNotes", "T1", "A note\twith a tab inside")]
    assert doc.equivalences == [Equivalence("Equiv", ["T1", "T2"])]
    assert doc.other == ["N1\tReference T1 Wikipedia:1234\tAspirin"]
    assert roundtrip(doc) == doc


def test_crlf_offsets_count_carriage_returns():
    text = "first line\r\naspirin 81 mg\r\n"
    start = text.index("aspirin")
    doc = parse(f"T1\tDrug {start} {start + 7}\taspirin\n", text)
    assert start == 12
    assert text[doc.entities[0].start : doc.entities[0].end] == "aspirin"


def test_crlf_in_ann_file_is_tolerated():
    doc = parse("T1\tDrug 13 20\taspirin\r\nT2\tStrength 21 26\t81 mg\r\n")
    assert [e.id for e in doc.entities] == ["T1", "T2"]


def test_non_ascii_offsets_are_characters():
    text = "Dose 5–10 µg/kg ± 2 of naïve drug 💊 aspirin."
    start = text.index("aspirin")
    micro = text.index("µg")
    doc = parse(f"T1\tDrug {start} {start + 7}\taspirin\nT2\tUnit {micro} {micro + 5}\tµg/kg\n", text)
    assert [text[e.start : e.end] for e in doc.entities] == ["aspirin", "µg/kg"]
    assert roundtrip(doc) == doc


def test_blank_lines_are_skipped():
    doc = parse("\nT1\tDrug 13 20\taspirin\n\n  \n")
    assert len(doc.entities) == 1 and doc.entities[0].line == 2 and not doc.other


def test_written_text_field_is_derived_from_the_text():
    doc = BratDocument(TEXT, entities=[Entity("T1", "Drug", [(13, 20)], "WRONG")])
    assert write_ann(doc) == "T1\tDrug 13 20\taspirin\n"


def test_written_text_field_stays_on_one_line():
    text = "joint\nswelling"
    doc = BratDocument(text, entities=[Entity("T1", "Sign", [(0, 14)])])
    assert write_ann(doc) == "T1\tSign 0 14\tjoint swelling\n"
    assert not IssueCollector().issues
    assert roundtrip(doc) == doc


def test_span_text_comparison_accepts_brat_and_ddi_joiners():
    text = "R-warfarin and (R)- or (S)-warfarin"
    assert span_text_matches("R- warfarin", text, [(0, 2), (2, 10)])
    assert span_text_matches("R-warfarin", text, [(0, 2), (2, 10)])
    assert not span_text_matches("warfarin", text, [(0, 2), (2, 10)])


def test_same_annotations_ignores_order_and_stored_text():
    a = parse("T1\tDrug 13 20\taspirin\nT2\tStrength 21 26\t81 mg\n")
    b = parse("T2\tStrength 21 26\twhatever\nT1\tDrug 13 20\taspirin\n", strict=False)
    assert a != b and same_annotations(a, b)
    assert canonical(a) == canonical(b)


def test_to_dict_from_dict_round_trip():
    ann = (
        "T1\tMedication 13 20\taspirin\nE1\tMedication:T1 \nT2\tDosage 21 26\t81 mg\n"
        "R1\tMODIFY Arg1:T2 Arg2:E1\nA1\tNeg E1\n#1\tAnnotatorNotes T1\tnote\n*\tOR T1 T2\nN1\tx T1 y\n"
    )
    doc = parse(ann)
    assert BratDocument.from_dict(doc.to_dict(), TEXT) == doc
