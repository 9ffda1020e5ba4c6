"""brat <-> Doc: spans, ents, relations, doc._.brat, alignment, round trips, DocBin."""
import pytest
from spacy.tokens import DocBin

from spacy_softprompt.annotations import ENTITY_SPANS_KEY, make_relation, set_entities
from spacy_softprompt.data.brat import BratDocument, parse_ann, same_annotations, write_ann
from spacy_softprompt.data.docs import brat_to_doc, doc_to_brat, docs_to_brat_dir, get_fragments, normalize_extensions
from spacy_softprompt.data.errors import BratError, IssueCollector
from spacy_softprompt.data.schema import apply_schema, load_schema
from spacy_softprompt.data.stats import ConversionStats

TEXT = "She took aspirinX 81 mg orally; developed joint swelling and discomfort.\r\nNo rash ."


def off(word, text=TEXT):
    start = text.index(word)
    return start, start + len(word)


def line(ann_id, etype, word, text=TEXT):
    s, e = off(word, text)
    return f"{ann_id}\t{etype} {s} {e}\t{word}\n"


def build_ann():
    js, je = off("joint")
    ds, de = off("discomfort")
    return (
        line("T1", "Medication", "aspirin")  # edge inside the token "aspirinX": needs splitting
        + line("T2", "Dosage", "81 mg")
        + line("T3", "Administration", "orally")
        + "E1\tMedication:T1 \n"
        + line("T4", "Sign_symptom", "joint swelling")
        + line("T5", "Biological_structure", "joint")
        + f"T6\tSign_symptom {js} {je};{ds} {de}\tjoint discomfort\n"
        + "E2\tSign_symptom:T4 \n"
        + f"T7\tSign_symptom {off('rash')[0]} {off('rash')[1] + 1}\trash \n"  # ends in whitespace
        + "R1\tMODIFY Arg1:T2 Arg2:E1\t\n"
        + "R2\tMODIFY Arg1:T3 Arg2:E1\t\n"
        + "R3\tCAUSE Arg1:E1 Arg2:E2\t\n"
        + "R4\tMODIFY Arg1:T5 Arg2:E2\t\n"
        + "R5\tBEFORE Arg1:T9 Arg2:E2\t\n"  # names a missing id
        + "A1\tPOLARITY E2 NEG\n"
        + "A2\tUMLS-Preferred-Name T1 Acetylsalicylic acid\n"
        + "#1\tAnnotatorNotes E2\tchecked by a second annotator\n"
        + "*\tOVERLAP E1 E2\n"
        + "N1\tReference T1 RxNorm:1191\taspirin\n"
    )


@pytest.fixture
def brat_doc():
    return parse_ann(build_ann(), TEXT, doc_id="case 1", file="case 1.ann", collector=IssueCollector(log=False))


def test_keep_everything_doc(nlp, brat_doc):
    collector = IssueCollector(log=False)
    stats = ConversionStats()
    doc = brat_to_doc(nlp, brat_doc, collector=collector, stats=stats)
    ents = [(s.text, s.label_) for s in doc.spans[ENTITY_SPANS_KEY]]
    assert ("aspirin", "Medication") in ents and ("joint swelling and discomfort", "Sign_symptom") in ents
    assert len(ents) == 6  # the whitespace-edged T7 is not a span
    # doc.ents: non-overlapping, longest first
    assert [e.text for e in doc.ents] == ["aspirin", "81 mg", "orally", "joint swelling and discomfort"]
    rels = {(r["label"], TEXT[r["arg1"][0] : r["arg1"][1]], TEXT[r["arg2"][0] : r["arg2"][1]], r["id"]) for r in doc._.relations}
    assert rels == {
        ("MODIFY", "81 mg", "aspirin", "R1"),
        ("MODIFY", "orally", "aspirin", "R2"),
        ("CAUSE", "aspirin", "joint swelling", "R3"),
        ("MODIFY", "joint", "joint swelling", "R4"),
    }
    assert stats.entities == 7 and stats.unalignable == 1 and stats.aligned_split == 1
    assert stats.aligned_tokenizer == 5 and stats.discontinuous == 1 and stats.relations_unresolved == 1
    (issue,) = collector.issues
    assert issue.kind == "alignment" and issue.ann_id == "T7" and issue.file == "case 1.ann" and issue.line == 9
    info = doc._.brat
    assert info["doc_id"] == "case 1" and info["schema"] is None
    assert [r["id"] for r in info["entities"] if not r["aligned"]] == ["T7"]
    span = next(s for s in doc.spans[ENTITY_SPANS_KEY] if s.text.startswith("joint swelling and"))
    assert get_fragments(doc, span) == [off("joint"), off("discomfort")]
    other = next(s for s in doc.spans[ENTITY_SPANS_KEY] if s.text == "orally")
    assert get_fragments(doc, other) == [off("orally")]


def test_keep_everything_round_trip_is_lossless(nlp, brat_doc):
    doc = brat_to_doc(nlp, brat_doc, collector=IssueCollector(log=False))
    back = doc_to_brat(doc)
    assert back == brat_doc  # same order too
    again = parse_ann(write_ann(back), TEXT, collector=IssueCollector(log=False))
    assert same_annotations(again, brat_doc)


def test_without_gold_splitting_the_entity_is_unalignable(nlp, brat_doc):
    stats = ConversionStats()
    doc = brat_to_doc(nlp, brat_doc, split_gold_boundaries=False, collector=IssueCollector(log=False), stats=stats)
    assert stats.unalignable == 2 and stats.aligned_split == 0
    assert "aspirinX" in [t.text for t in doc]
    assert doc_to_brat(doc) == brat_doc  # still written back


def test_schema_doc_and_round_trip(nlp, brat_doc):
    schema = load_schema("maccrobat_medication")
    stats = ConversionStats()
    doc = brat_to_doc(nlp, brat_doc, schema, collector=IssueCollector(log=False), stats=stats)
    assert sorted(s.label_ for s in doc.spans[ENTITY_SPANS_KEY]) == ["Dosage", "Medication", "Route", "Sign_symptom", "Sign_symptom"]
    assert {(r["label"], tuple(r["arg1"][:2]), tuple(r["arg2"][:2])) for r in doc._.relations} == {
        ("Dosage-Drug", off("81 mg"), off("aspirin")),
        ("Route-Drug", off("orally"), off("aspirin")),
        ("ADE-Drug", off("joint swelling"), off("aspirin")),
    }
    assert stats.entities_dropped == 1 and stats.relations_dropped == 1 and stats.relations == 3
    assert doc._.brat["schema"] == "maccrobat_medication" and "events" not in doc._.brat
    written = parse_ann(write_ann(doc_to_brat(doc)), TEXT, collector=IssueCollector(log=False))

    def view(mapped):
        ents = sorted((e.start, e.end, label, tuple(e.fragments)) for e, label in mapped.entities)
        rels = sorted((r.label, r.arg1.start, r.arg1.end, r.arg2.start, r.arg2.end) for r in mapped.relations)
        return ents, rels

    assert view(apply_schema(written, None)) == view(apply_schema(brat_doc, schema))
    assert {r.type for r in written.relations} == {"Dosage-Drug", "Route-Drug", "ADE-Drug"}
    assert {e.type for e in written.entities} >= {"Route", "Medication"}


def test_predicted_entities_and_relations_get_fresh_ids(nlp, brat_doc):
    doc = brat_to_doc(nlp, brat_doc, collector=IssueCollector(log=False))
    spans = list(doc.spans[ENTITY_SPANS_KEY])
    new = doc.char_span(*off("developed"), label="Clinical_event")
    set_entities(doc, spans + [new])
    rels = list(doc._.relations)
    rels.append(make_relation("AFTER", new, spans[0]))
    rels.append(make_relation("BEFORE", (0, 3, "Subject"), new))  # argument that is no entity yet
    doc._.relations = rels
    out = doc_to_brat(doc)
    assert [e.id for e in out.entities][: len(brat_doc.entities)] == [e.id for e in brat_doc.entities]
    added = {e.id: (e.type, e.fragments) for e in out.entities if e.id not in {x.id for x in brat_doc.entities}}
    assert sorted(added.values()) == [("Clinical_event", [off("developed")]), ("Subject", [(0, 3)])]
    assert all(int(i[1:]) > 7 for i in added)
    new_rels = [r for r in out.relations if r.id not in {"R1", "R2", "R3", "R4", "R5"}]
    assert [r.type for r in new_rels] == ["AFTER", "BEFORE"] and all(r.id.startswith("R") for r in new_rels)
    reparsed = parse_ann(write_ann(out), TEXT, collector=IssueCollector(log=False))
    assert len(reparsed.relations) == 7


def test_removed_relation_is_not_written(nlp, brat_doc):
    doc = brat_to_doc(nlp, brat_doc, collector=IssueCollector(log=False))
    doc._.relations = [r for r in doc._.relations if r["id"] != "R2"]
    ids = [r.id for r in doc_to_brat(doc).relations]
    assert ids == ["R1", "R3", "R4", "R5"]  # R5 (unresolved) is kept verbatim


def test_plain_doc_without_brat_info(nlp):
    doc = nlp("aspirin 81 mg")
    set_entities(doc, [doc.char_span(0, 7, label="Drug"), doc.char_span(8, 13, label="Strength")])
    doc._.relations = [make_relation("Strength-Drug", doc.char_span(8, 13, label="Strength"), doc.char_span(0, 7, label="Drug"))]
    out = doc_to_brat(doc, doc_id="x")
    assert write_ann(out) == "T1\tDrug 0 7\taspirin\nT2\tStrength 8 13\t81 mg\nR1\tStrength-Drug Arg1:T2 Arg2:T1\n"


def test_docbin_keeps_spans_relations_and_brat(nlp, brat_doc):
    doc = brat_to_doc(nlp, brat_doc, collector=IssueCollector(log=False))
    data = DocBin(store_user_data=True, docs=[doc]).to_bytes()
    (loaded,) = DocBin().from_bytes(data).get_docs(nlp.vocab)
    assert [(s.start_char, s.end_char, s.label_) for s in loaded.spans[ENTITY_SPANS_KEY]] == [
        (s.start_char, s.end_char, s.label_) for s in doc.spans[ENTITY_SPANS_KEY]
    ]
    assert [(e.start_char, e.end_char, e.label_) for e in loaded.ents] == [(e.start_char, e.end_char, e.label_) for e in doc.ents]
    assert [t.text for t in loaded] == [t.text for t in doc]  # the split tokenization too
    # msgpack hands lists back as tuples: normalise before comparing
    assert isinstance(loaded._.relations, tuple)
    normalize_extensions(loaded)
    assert loaded._.relations == doc._.relations and loaded._.brat == doc._.brat
    assert doc_to_brat(loaded) == brat_doc


def test_docbin_without_user_data_keeps_spans_only(nlp, brat_doc):
    doc = brat_to_doc(nlp, brat_doc, collector=IssueCollector(log=False))
    (loaded,) = DocBin(store_user_data=False, docs=[doc]).get_docs(nlp.vocab)
    assert len(loaded.spans[ENTITY_SPANS_KEY]) == 6 and loaded._.relations is None and loaded._.brat is None


def test_docs_to_brat_dir(nlp, brat_doc, tmp_path):
    docs = [brat_to_doc(nlp, brat_doc, collector=IssueCollector(log=False)), nlp("plain text"), nlp("more")]
    paths = docs_to_brat_dir(docs, tmp_path)
    assert [p.name for p in paths] == ["case 1.txt", "doc00002.txt", "doc00003.txt"]
    assert paths[0].read_bytes() == TEXT.encode("utf-8")
    assert (tmp_path / "doc00002.ann").read_text(encoding="utf-8") == ""


def test_strict_alignment_raises(nlp, brat_doc):
    with pytest.raises(BratError, match="whitespace"):
        brat_to_doc(nlp, brat_doc, collector=IssueCollector(strict=True))


def test_entity_with_offsets_past_the_end_round_trips(nlp):
    doc = parse_ann("T1\tDrug 0 3\tabc\nT2\tDrug 2 99\tc\n", "abc", collector=IssueCollector(log=False))
    stats = ConversionStats()
    sp = brat_to_doc(nlp, doc, collector=IssueCollector(log=False), stats=stats)
    assert stats.unalignable == 1
    assert doc_to_brat(sp) == doc


def test_tokenizer_callable_is_accepted(nlp):
    doc = brat_to_doc(nlp.tokenizer, BratDocument("abc def", entities=[]))
    assert doc.text == "abc def" and doc._.relations == []
