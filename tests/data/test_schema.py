"""Task schemas: shipped files, validation, and mapping brat annotations."""
import json

import pytest

from spacy_softprompt.data.brat import parse_ann
from spacy_softprompt.data.errors import BratError
from spacy_softprompt.data.schema import (
    SCHEMA_DIR,
    apply_schema,
    available_schemas,
    load_schema,
    mapped_annotations,
    schema_from_dict,
)

SHIPPED = ["chia", "ddi2013", "fda_ars", "maccrobat_medication", "n2c2_2018", "n2c2_2022_sdoh"]


def test_shipped_schemas_load():
    assert available_schemas() == SHIPPED
    for name in SHIPPED:
        schema = load_schema(name)
        assert schema.name == name
        assert schema.entity_labels and schema.relation_labels


@pytest.mark.parametrize("name", SHIPPED)
def test_every_label_has_a_question(name):
    schema = load_schema(name)
    for label in schema.entity_labels:
        question = schema.question("entities", label)
        assert question and question.endswith("?"), (name, label)
    for label in schema.relation_labels:
        question = schema.question("relations", label)
        assert question and question.endswith("?"), (name, label)
        template = schema.questions["relations"][label]["template"]
        assert "{arg1}" in template or "{arg2}" in template


def test_configs_schemas_symlink_points_here():
    from pathlib import Path

    link = Path(__file__).resolve().parents[2] / "configs" / "schemas"
    if link.exists():
        assert link.resolve() == SCHEMA_DIR


def test_n2c2_2018_is_identity_with_attribute_first():
    schema = load_schema("n2c2_2018")
    assert schema.entity_labels == ["Drug", "Strength", "Dosage", "Duration", "Frequency", "Form", "Route", "Reason", "ADE"]
    assert len(schema.relation_labels) == 8
    for label, pairs in schema.pairs.items():
        assert pairs == [(label.split("-")[0], "Drug")]


def test_maccrobat_pairs_and_rename():
    schema = load_schema("maccrobat_medication")
    assert schema.entity_label("Administration") == "Route"
    assert schema.entity_label("Lab_value") is None
    assert schema.pairs["Route-Drug"] == [("Route", "Medication")]
    assert ("Sign_symptom", "Medication") in schema.pairs["ADE-Drug"]


def test_load_from_path_and_to_dict_round_trip(tmp_path):
    schema = load_schema("fda_ars")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(schema.to_dict()), encoding="utf-8")
    again = load_schema(str(path))
    assert again.pairs == schema.pairs and again.rules == schema.rules and again.entities == schema.entities
    assert load_schema(None) is None and load_schema(schema) is schema


MINIMAL = {
    "entities": {"Medication": "Drug", "Dosage": "Dosage"},
    "relations": {"Dosage-Drug": {"rules": [{"relation": "MODIFY", "arg1": ["Dosage"], "arg2": ["Medication"]}]}},
}


def bad(**changes):
    data = json.loads(json.dumps(MINIMAL))
    for key, value in changes.items():
        data[key] = value
    return data


@pytest.mark.parametrize(
    "data,message",
    [
        ([], "JSON object"),
        (bad(extra=1), "unknown key"),
        (bad(entities={}), "'entities'"),
        (bad(entities={"A": 3}), "non-empty label"),
        (bad(relations=[]), "'relations'"),
        (bad(relations={"X": {"rules": [{"relation": "R", "arg1": ["Lab_value"]}]}}), "not in 'entities'"),
        (bad(relations={"X": {"rules": [{"relation": "R", "arg1": ["Dosage"], "argX": 1}]}}), "unknown key"),
        (bad(relations={"X": {"rules": [{"relation": "R", "event": "E"}]}}), "exactly one"),
        (bad(relations={"X": {"rules": [{"event": "E"}]}}), "needs a 'role'"),
        (bad(relations={"X": {"rules": [{"relation": "R", "role": "r"}]}}), "only goes with"),
        (bad(relations={"X": {"rules": [{"relation": "R", "swap": "yes", "arg1": ["Dosage"], "arg2": ["Dosage"]}]}}), "swap"),
        (bad(relations={"X": {"rules": []}}), "non-empty list"),
        (bad(relations={"X": {"rules": [{"relation": "R"}]}}), "give 'pairs'"),
        (bad(relations={"X": {"pairs": [["Drug", "Nope"]], "rules": [{"relation": "R"}]}}), "no entity maps"),
        (bad(relations={"X": {"pairs": [["Drug"]], "rules": [{"relation": "R"}]}}), "bad pair"),
        (
            bad(relations={"X": {"pairs": [["Drug", "Dosage"]], "rules": [{"relation": "R", "arg1": ["Dosage"], "arg2": ["Medication"]}]}}),
            "does not allow",
        ),
        (bad(questions={"entities": {"Nope": "?"}}), "not in the schema"),
        (bad(questions={"other": {}}), "unknown key"),
    ],
)
def test_invalid_schemas_raise_clear_errors(data, message):
    with pytest.raises(BratError, match=message):
        schema_from_dict(data, path="my.json")


def test_unknown_name_lists_shipped(tmp_path):
    with pytest.raises(BratError, match="maccrobat_medication"):
        load_schema("no_such_schema")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(BratError, match="not valid JSON"):
        load_schema(broken)


TEXT = "She took aspirin 81 mg orally and developed a rash and nausea."


def offsets(word):
    start = TEXT.index(word)
    return f"{start} {start + len(word)}"


MACCROBAT_ANN = (
    f"T1\tMedication {offsets('aspirin')}\taspirin\n"
    "E1\tMedication:T1 \n"
    f"T2\tDosage {offsets('81 mg')}\t81 mg\n"
    f"T3\tAdministration {offsets('orally')}\torally\n"
    f"T4\tSign_symptom {offsets('rash')}\trash\n"
    "E2\tSign_symptom:T4 \n"
    f"T5\tSign_symptom {offsets('nausea')}\tnausea\n"
    f"T6\tLab_value {offsets('developed')}\tdeveloped\n"
    "R1\tMODIFY Arg1:T2 Arg2:E1\t\n"
    "R2\tMODIFY Arg1:T3 Arg2:E1\t\n"
    "R3\tCAUSE Arg1:E1 Arg2:E2\t\n"
    "R4\tMODIFY Arg1:T6 Arg2:E1\t\n"
    "R5\tBEFORE Arg1:E1 Arg2:T5\t\n"
    "R6\tCAUSE Arg1:T5 Arg2:E1\t\n"
)


def test_maccrobat_mapping_follows_events_renames_and_swaps():
    doc = parse_ann(MACCROBAT_ANN, TEXT, strict=True)
    mapped = apply_schema(doc, load_schema("maccrobat_medication"))
    assert sorted(label for _, label in mapped.entities) == ["Dosage", "Medication", "Route", "Sign_symptom", "Sign_symptom"]
    assert mapped.entities_dropped == 1  # Lab_value
    rels = {(r.label, TEXT[r.arg1.start : r.arg1.end], TEXT[r.arg2.start : r.arg2.end], r.id) for r in mapped.relations}
    assert rels == {
        ("Dosage-Drug", "81 mg", "aspirin", "R1"),
        ("Route-Drug", "orally", "aspirin", "R2"),
        ("ADE-Drug", "rash", "aspirin", "R3"),  # swapped: arg1 the sign, arg2 the drug
    }
    assert mapped.relations_dropped == 3  # R4 (dropped type), R5 (BEFORE), R6 (CAUSE in the wrong direction)


def test_keep_everything_mapping():
    doc = parse_ann(MACCROBAT_ANN, TEXT, strict=True)
    mapped = apply_schema(doc, None)
    assert len(mapped.entities) == 6 and mapped.entities_dropped == 0
    assert [r.label for r in mapped.relations] == ["MODIFY", "MODIFY", "CAUSE", "MODIFY", "BEFORE", "CAUSE"]
    assert mapped.relations[2].arg2.id == "T4"  # E2 followed to its trigger


FDA_TEXT = "Severe headache and mild nausea were not seen with placebo."


def test_event_roles_become_binary_relations():
    t = FDA_TEXT
    ann = (
        f"T1\tAdverseReaction {t.index('headache')} {t.index('headache') + 8}\theadache\n"
        f"T2\tSeverity 0 6\tSevere\n"
        f"T3\tAdverseReaction {t.index('nausea')} {t.index('nausea') + 6}\tnausea\n"
        f"T4\tSeverity {t.index('mild')} {t.index('mild') + 4}\tmild\n"
        f"T5\tNegation {t.index('not')} {t.index('not') + 3}\tnot\n"
        f"T6\tFactor {t.index('placebo')} {t.index('placebo') + 7}\tplacebo\n"
        "E2\tSeverity:T2 \nE4\tSeverity:T4 \nE5\tNegation:T5 \nE6\tFactor:T6 \n"
        "E1\tAdverseReaction:T1 Effect:E2 Negated:E5 Hypothetical:E6\n"
        "E3\tAdverseReaction:T3 Effect:E4 Effect2:E2 Unknown:E6\n"
    )
    doc = parse_ann(ann, t, strict=True)
    mapped = apply_schema(doc, load_schema("fda_ars"))
    rels = sorted((r.label, t[r.arg1.start : r.arg1.end], t[r.arg2.start : r.arg2.end]) for r in mapped.relations)
    assert rels == [
        ("Hypothetical-AdverseReaction", "placebo", "headache"),
        ("Negated-AdverseReaction", "not", "headache"),
        ("Severity-AdverseReaction", "Severe", "headache"),
        ("Severity-AdverseReaction", "Severe", "nausea"),
        ("Severity-AdverseReaction", "mild", "nausea"),
    ]
    assert mapped.relations_dropped == 1  # the Unknown role
    assert all(r.id is None and ":" in r.source for r in mapped.relations)


def test_pairs_filter_relations_of_unrestricted_rules():
    schema = schema_from_dict(
        {
            "entities": {"Medication": "Drug", "Dosage": "Dosage", "Administration": "Route"},
            "relations": {"Dosage-Drug": {"pairs": [["Dosage", "Drug"]], "rules": [{"relation": "MODIFY"}]}},
        }
    )
    doc = parse_ann(MACCROBAT_ANN, TEXT)
    mapped = apply_schema(doc, schema)
    assert [(r.label, r.arg1.id, r.arg2.id) for r in mapped.relations] == [("Dosage-Drug", "T2", "T1")]


def test_identity_rule_is_the_default():
    schema = schema_from_dict(
        {"entities": {"Dosage": "Dosage", "Medication": "Drug"}, "relations": {"MODIFY": {"pairs": [["Dosage", "Drug"]]}}}
    )
    assert schema.rules[0].relation == "MODIFY"
    assert [r.label for r in apply_schema(parse_ann(MACCROBAT_ANN, TEXT), schema).relations] == ["MODIFY"]


def test_mapped_annotations_accept_target_labels():
    schema = load_schema("maccrobat_medication")
    gold = parse_ann(MACCROBAT_ANN, TEXT, strict=True)
    gold_ents, gold_rels = mapped_annotations(gold, schema)
    assert (TEXT.index("orally"), TEXT.index("orally") + 6, "Route") in gold_ents
    # a pipeline's output: target labels and target relation types
    predicted = parse_ann(
        f"T1\tMedication {offsets('aspirin')}\taspirin\nT2\tRoute {offsets('orally')}\torally\n"
        f"T3\tSign_symptom {offsets('rash')}\trash\nT4\tFrequency {offsets('She')}\tShe\n"
        "R1\tRoute-Drug Arg1:T2 Arg2:T1\nR2\tADE-Drug Arg1:T3 Arg2:T1\nR3\tRoute-Drug Arg1:T1 Arg2:T2\n",
        TEXT,
        strict=True,
    )
    ents, rels = mapped_annotations(predicted, schema, accept_target_labels=True)
    assert sorted(label for *_, label in ents) == ["Frequency", "Medication", "Route", "Sign_symptom"]
    assert sorted(r[0] for r in rels) == ["ADE-Drug", "Route-Drug"]  # R3 joins a pair the schema does not allow
    assert set(rels) == {r for r in gold_rels if r[0] in ("Route-Drug", "ADE-Drug")}
    plain_ents, plain_rels = mapped_annotations(predicted, schema)  # source types only
    assert sorted(label for *_, label in plain_ents) == ["Frequency", "Medication", "Sign_symptom"] and plain_rels == []
