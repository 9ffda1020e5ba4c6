"""Valued entity types and the n2c2 2022 SDoH schema (SHAC-style brat: events with
arguments, status labels taken from attribute values)."""
import json

import pytest

from spacy_softprompt.brat_scoring import score_brat_dirs
from spacy_softprompt.data.brat import parse_ann
from spacy_softprompt.data.docs import brat_to_doc
from spacy_softprompt.data.errors import BratError, IssueCollector
from spacy_softprompt.data.schema import apply_schema, load_schema, schema_from_dict
from spacy_softprompt.data.stats import ConversionStats

TEXT = (
    "Social history: smokes 1 ppd for 20 years. Denies alcohol. Former cocaine use, quit in 2010. "
    "Retired teacher. Lives with her husband."
)


def at(word: str, nth: int = 0) -> str:
    start = -1
    for _ in range(nth + 1):
        start = TEXT.index(word, start + 1)
    return f"{start} {start + len(word)}\t{word}"


SHAC_ANN = "\n".join(
    [
        f"T1\tTobacco {at('smokes')}",
        f"T2\tStatusTime {at('smokes')}",
        f"T3\tAmount {at('1 ppd')}",
        f"T4\tDuration {at('20 years')}",
        "E1\tTobacco:T1 Status:T2 Amount:T3 Duration:T4",
        "A1\tStatusTimeVal T2 current",
        f"T5\tAlcohol {at('alcohol')}",
        f"T6\tStatusTime {at('Denies')}",
        "E2\tAlcohol:T5 Status:T6",
        "A2\tStatusTimeVal T6 none",
        f"T7\tDrug {at('cocaine use')}",
        f"T8\tStatusTime {at('Former')}",
        f"T9\tType {at('cocaine')}",
        f"T10\tHistory {at('in 2010')}",
        "E3\tDrug:T7 Status:T8 Type:T9 History:T10",
        "A3\tStatusTimeVal T8 past",
        f"T11\tEmployment {at('teacher')}",
        f"T12\tStatusEmploy {at('Retired')}",
        "E4\tEmployment:T11 Status:T12",
        "A4\tStatusEmployVal T12 retired",
        f"T13\tLivingStatus {at('Lives')}",
        f"T14\tStatusTime {at('Lives')}",
        f"T15\tTypeLiving {at('with her husband')}",
        "E5\tLivingStatus:T13 Status:T14 Type:T15",
        "A5\tStatusTimeVal T14 current",
        "A6\tTypeLivingVal T15 with_family",
    ]
) + "\n"


def text_of(entity) -> str:
    return TEXT[entity.start : entity.end]


def test_status_labels_come_from_attribute_values_and_roles_become_relations():
    mapped = apply_schema(parse_ann(SHAC_ANN, TEXT, strict=True), load_schema("n2c2_2022_sdoh"))
    labels = {(text_of(e), label) for e, label in mapped.entities}
    assert {
        ("smokes", "Tobacco"),
        ("smokes", "StatusTime_current"),
        ("Denies", "StatusTime_none"),
        ("Former", "StatusTime_past"),
        ("Retired", "StatusEmploy_retired"),
        ("Lives", "StatusTime_current"),
        ("with her husband", "TypeLiving_with_family"),
        ("cocaine", "Type"),
    } <= labels
    assert len(mapped.entities) == 15 and mapped.entities_dropped == 0 and not mapped.entities_unvalued
    relations = sorted((r.label, text_of(r.arg1), text_of(r.arg2)) for r in mapped.relations)
    assert relations == [
        ("Amount", "smokes", "1 ppd"),
        ("Duration", "smokes", "20 years"),
        ("History", "cocaine use", "in 2010"),
        ("Status", "Lives", "Lives"),
        ("Status", "alcohol", "Denies"),
        ("Status", "cocaine use", "Former"),
        ("Status", "smokes", "smokes"),
        ("Status", "teacher", "Retired"),
        ("Type", "Lives", "with her husband"),
        ("Type", "cocaine use", "cocaine"),
    ]
    assert mapped.relations_dropped == 0


PROBLEM_TEXT = "Drinks socially, sometimes, rarely."
PROBLEM_ANN = (
    "T1\tAlcohol 0 6\tDrinks\n"
    "T2\tStatusTime 7 15\tsocially\n"
    "T3\tStatusTime 17 26\tsometimes\n"
    "T4\tStatusTime 28 34\trarely\n"
    "E1\tAlcohol:T1 Status:T2 Status2:T3 Status3:T4\n"
    "A1\tStatusTimeVal T3 sometimes\n"
    "A2\tStatusTimeVal T4 current\n"
    "A3\tStatusTimeVal T4 past\n"
)


def test_entities_without_a_usable_value_are_dropped_with_the_reason():
    doc = parse_ann(PROBLEM_ANN, PROBLEM_TEXT, strict=True)
    mapped = apply_schema(doc, load_schema("n2c2_2022_sdoh"))
    assert [label for _, label in mapped.entities] == ["Alcohol"]
    reasons = {ent.id: why for ent, why in mapped.entities_unvalued}
    assert set(reasons) == {"T2", "T3", "T4"} and mapped.entities_dropped == 3
    assert "no StatusTimeVal attribute" in reasons["T2"]
    assert "'sometimes' is not in the schema" in reasons["T3"] and "current" in reasons["T3"]
    assert "2 different StatusTimeVal values" in reasons["T4"]
    assert mapped.relations == [] and mapped.relations_dropped == 3  # their Status arguments lost an end


def test_conversion_reports_each_unvalued_entity_with_file_and_line(nlp):
    doc = parse_ann(PROBLEM_ANN, PROBLEM_TEXT, strict=True, file="notes/n1.ann")
    collector, stats = IssueCollector(log=False), ConversionStats()
    spacy_doc = brat_to_doc(nlp, doc, load_schema("n2c2_2022_sdoh"), collector=collector, stats=stats)
    assert [(e.text, e.label_) for e in spacy_doc.ents] == [("Drinks", "Alcohol")]
    issues = [i for i in collector.issues if i.kind == "value"]
    assert [(i.file, i.line, i.ann_id) for i in issues] == [("notes/n1.ann", 2, "T2"), ("notes/n1.ann", 3, "T3"), ("notes/n1.ann", 4, "T4")]
    assert issues[1].excerpt == "sometimes" and str(issues[1]).startswith("notes/n1.ann:3 [T3]: entity dropped")
    assert stats.entities_dropped == 3
    with pytest.raises(BratError, match="no StatusTimeVal attribute"):
        brat_to_doc(nlp, doc, load_schema("n2c2_2022_sdoh"), collector=IssueCollector(strict=True))


def test_scoring_accepts_native_and_target_label_predictions(tmp_path):
    gold, native, ours = (tmp_path / name for name in ("gold", "native", "ours"))
    for folder in (gold, native, ours):
        folder.mkdir()
        (folder / "n1.txt").write_text(TEXT, encoding="utf-8")
    (gold / "n1.ann").write_text(SHAC_ANN, encoding="utf-8")
    (native / "n1.ann").write_text(SHAC_ANN.replace("StatusTimeVal T6 none", "StatusTimeVal T6 past"), encoding="utf-8")
    # a pipeline's output: entities in target labels, relations as R lines
    (ours / "n1.ann").write_text(
        f"T1\tAlcohol {at('alcohol')}\nT2\tStatusTime_none {at('Denies')}\nT3\tTobacco {at('smokes')}\n"
        "R1\tStatus Arg1:T1 Arg2:T2\n",
        encoding="utf-8",
    )
    schema = load_schema("n2c2_2022_sdoh")
    native_scores = score_brat_dirs(gold, native, schema=schema)
    ents = native_scores["ents_per_type"]
    assert (ents["StatusTime_none"]["strict_f"], ents["StatusTime_none"]["gold"]) == (0.0, 1)
    assert (ents["StatusTime_past"]["strict_p"], ents["StatusTime_past"]["pred"]) == (0.5, 2)
    assert native_scores["ents_strict_f"] == pytest.approx(14 / 15)
    assert native_scores["rels_strict_f"] == pytest.approx(0.9)  # one of 10 Status relations has the wrong value label
    ours_scores = score_brat_dirs(gold, ours, schema=schema)
    assert ours_scores["ents_strict_p"] == 1.0 and ours_scores["ents_strict_r"] == pytest.approx(3 / 15)
    assert ours_scores["rels_strict_p"] == 1.0 and ours_scores["rels_strict_r"] == pytest.approx(1 / 10)


def test_valued_schema_round_trips_and_derives_pairs_for_every_value(tmp_path):
    schema = load_schema("n2c2_2022_sdoh")
    assert ("Employment", "StatusEmploy_on_disability") in schema.pairs["Status"]
    assert ("Alcohol", "StatusEmploy_retired") not in schema.pairs["Status"]
    assert schema.targets_of("TypeLiving") == ["TypeLiving_alone", "TypeLiving_with_family", "TypeLiving_with_others", "TypeLiving_homeless"]
    assert schema.entity_label("StatusTime") is None and schema.entity_label("StatusTime", "past") == "StatusTime_past"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(schema.to_dict()), encoding="utf-8")
    again = load_schema(path)
    assert (again.entity_labels, again.pairs, again.rules, again.valued) == (
        schema.entity_labels, schema.pairs, schema.rules, schema.valued
    )
    assert list(again.to_dict()["entities"]) == list(json.loads((tmp_path / "mine.json").read_text())["entities"])


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"values": {"current": "S_current"}}, "'attribute' must name"),
        ({"attribute": "StatusTimeVal"}, "'values' must be a non-empty object"),
        ({"attribute": "StatusTimeVal", "values": {}}, "'values' must be a non-empty object"),
        ({"attribute": "StatusTimeVal", "values": {"current": ""}}, "must map to a non-empty label"),
        ({"attribute": "StatusTimeVal", "values": {"current": "S"}, "label": "S"}, "unknown key"),
    ],
)
def test_invalid_valued_entries_raise_clear_errors(entry, message):
    with pytest.raises(BratError, match=message):
        schema_from_dict({"entities": {"Alcohol": "Alcohol", "StatusTime": entry}}, path="my.json")


def _pipeline_output(nlp, text, ann):
    """A Doc as a pipeline leaves it: entities and relations in target labels, no brat extras."""
    from spacy_softprompt.annotations import make_relation, set_entities

    gold = brat_to_doc(nlp, parse_ann(ann, text, strict=True), load_schema("n2c2_2022_sdoh"), collector=IssueCollector(log=False))
    doc = nlp.make_doc(text)
    set_entities(doc, [doc.char_span(s.start_char, s.end_char, label=s.label_) for s in gold.spans["entities"]])
    doc._.relations = [make_relation(r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in gold._.relations]
    return doc


def test_export_writes_the_shac_form_back_and_it_maps_to_the_same_annotations(nlp, tmp_path):
    from spacy.tokens import DocBin

    from spacy_softprompt.data.brat import read_brat_dir
    from spacy_softprompt.data.readers import export_docbin

    doc = _pipeline_output(nlp, TEXT, SHAC_ANN)
    assert any(s.label_ == "StatusTime_current" for s in doc.spans["entities"])
    path = tmp_path / "pred.spacy"
    DocBin(docs=[doc], store_user_data=True).to_disk(path)
    schema = load_schema("n2c2_2022_sdoh")
    export_docbin(path, tmp_path / "shac", schema=schema)
    export_docbin(path, tmp_path / "folded")
    shac = read_brat_dir(tmp_path / "shac", strict=True)[0]
    ann = (tmp_path / "shac" / "doc00001.ann").read_text()
    assert "StatusTime_" not in ann and "\tStatusTimeVal T" in ann and "\tTypeLivingVal T" in ann
    assert sorted(e.type for e in shac.events) == ["Alcohol", "Drug", "Employment", "LivingStatus", "Tobacco"]
    tobacco = next(e for e in shac.events if e.type == "Tobacco")
    assert sorted(role for role, _ in tobacco.args) == ["Amount", "Duration", "Status"]
    assert not shac.relations  # every relation became an event argument
    # the SHAC form maps to exactly the annotations of the gold file
    gold = apply_schema(parse_ann(SHAC_ANN, TEXT, strict=True), schema)
    back = apply_schema(shac, schema)

    def items(mapped):
        ents = sorted((e.start, e.end, label) for e, label in mapped.entities)
        rels = sorted((r.label, r.arg1.start, r.arg2.start, r.arg2.end) for r in mapped.relations)
        return ents, rels

    assert items(back) == items(gold)
    folded = (tmp_path / "folded" / "doc00001.ann").read_text()
    assert "StatusTime_current" in folded and "\tStatus Arg1:" in folded and "StatusTimeVal" not in folded


def test_source_form_numbers_repeated_roles_and_keeps_what_it_cannot_map():
    from spacy_softprompt.data.brat import write_ann
    from spacy_softprompt.data.source_form import to_source_form

    text = "Drinks beer and wine, smokes."
    predicted = parse_ann(
        "T1\tAlcohol 0 6\tDrinks\nT2\tType 7 11\tbeer\nT3\tType 16 20\twine\nT4\tTobacco 22 28\tsmokes\n"
        "T5\tStatusTime_someday 22 28\tsmokes\n"  # a label the schema does not know: kept
        "R1\tType Arg1:T1 Arg2:T2\nR2\tType Arg1:T1 Arg2:T3\n"
        "R3\tAmount Arg1:T4 Arg2:T2\n"  # Tobacco-Type is no Amount pair of the schema: kept as it is
        "R4\tStatus Arg1:T4 Arg2:T5\n",
        text,
        strict=True,
    )
    shac = to_source_form(predicted, load_schema("n2c2_2022_sdoh"))
    alcohol = next(e for e in shac.events if e.type == "Alcohol")
    assert alcohol.args == [("Type", "T2"), ("Type2", "T3")]
    assert [r.id for r in shac.relations] == ["R3", "R4"] and not next(e for e in shac.events if e.type == "Tobacco").args
    assert [e.type for e in shac.entities][-1] == "StatusTime_someday" and not shac.attributes
    assert predicted.events == [] and predicted.entities[0].type == "Alcohol"  # the input is left as it was
    assert "E1\tAlcohol:T1 Type:T2 Type2:T3" in write_ann(shac)


def test_source_form_undoes_renames_and_swaps_of_relation_rules():
    from spacy_softprompt.data.source_form import to_source_form

    text = "aspirin 81 mg orally gave a rash"
    predicted = parse_ann(
        "T1\tMedication 0 7\taspirin\nT2\tDosage 8 13\t81 mg\nT3\tRoute 14 20\torally\nT4\tSign_symptom 28 32\trash\n"
        "R1\tDosage-Drug Arg1:T2 Arg2:T1\nR2\tRoute-Drug Arg1:T3 Arg2:T1\nR3\tADE-Drug Arg1:T4 Arg2:T1\n",
        text,
        strict=True,
    )
    schema = load_schema("maccrobat_medication")
    source = to_source_form(predicted, schema)
    assert [(e.id, e.type) for e in source.entities][2] == ("T3", "Administration")
    assert [(r.id, r.type, r.arg1, r.arg2) for r in source.relations] == [
        ("R1", "MODIFY", "T2", "T1"),
        ("R2", "MODIFY", "T3", "T1"),
        ("R3", "CAUSE", "T1", "T4"),  # the schema swaps CAUSE(drug, sign) into ADE-Drug(sign, drug)
    ]
    again = apply_schema(source, schema)
    assert sorted((r.label, r.arg1.id, r.arg2.id) for r in again.relations) == [
        ("ADE-Drug", "T4", "T1"), ("Dosage-Drug", "T2", "T1"), ("Route-Drug", "T3", "T1")
    ]
    assert sorted(label for _, label in again.entities) == ["Dosage", "Medication", "Route", "Sign_symptom"]


def test_cli_convert_then_export_round_trips_a_shac_folder(tmp_path):
    from typer.testing import CliRunner

    from spacy_softprompt.cli import app
    from spacy_softprompt.data.brat import read_brat_dir

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "n1.txt").write_text(TEXT, encoding="utf-8")
    (notes / "n1.ann").write_text(SHAC_ANN, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(notes), str(tmp_path / "c.spacy"), "--schema", "n2c2_2022_sdoh"])
    assert result.exit_code == 0, result.output
    assert "entities: 15 kept" in result.output and "relations: 10 kept" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "c.spacy"), str(tmp_path / "out"), "--schema", "n2c2_2022_sdoh"])
    assert result.exit_code == 0, result.output
    schema = load_schema("n2c2_2022_sdoh")
    written = apply_schema(read_brat_dir(tmp_path / "out", strict=True)[0], schema)
    gold = apply_schema(parse_ann(SHAC_ANN, TEXT, strict=True), schema)
    assert sorted((e.start, e.end, label) for e, label in written.entities) == sorted(
        (e.start, e.end, label) for e, label in gold.entities
    )
    assert sorted((r.label, r.arg1.start, r.arg2.start) for r in written.relations) == sorted(
        (r.label, r.arg1.start, r.arg2.start) for r in gold.relations
    )
