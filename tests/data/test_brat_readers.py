"""BratCorpus.v1 reader and DocBin conversion / export."""
import json

import pytest
from spacy.training import Example
from spacy.util import registry

from spacy_softprompt.annotations import ENTITY_SPANS_KEY
from spacy_softprompt.data.brat import read_brat_dir, same_annotations
from spacy_softprompt.data.errors import BratError, IssueCollector
from spacy_softprompt.data.readers import (
    BratCorpus,
    convert_brat_dir,
    create_brat_corpus,
    export_docbin,
    load_docbin,
    read_brat_docs,
)
from spacy_softprompt.data.stats import ConversionStats

DOCS = {
    "a": ("She took aspirin 81 mg orally.", "T1\tMedication 9 16\taspirin\nE1\tMedication:T1 \nT2\tDosage 17 22\t81 mg\nR1\tMODIFY Arg1:T2 Arg2:E1\n"),
    "b c": ("Warfarin 5mg daily.", "T1\tMedication 0 8\tWarfarin\nT2\tDosage 9 12\t5mg\nT3\tFrequency 13 18\tdaily\nR1\tMODIFY Arg1:T2 Arg2:T1\nR2\tMODIFY Arg1:T3 Arg2:T1\n"),
    "sub/d": ("No drugs.\r\nNone .", "T1\tSign_symptom 0 2\tNo\nT2\tLab_value 3 12\tdrugs.\r\nN\n"),
}


@pytest.fixture
def corpus_dir(tmp_path):
    for name, (text, ann) in DOCS.items():
        path = tmp_path / "corpus" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".txt").write_bytes(text.encode("utf-8"))
        path.with_suffix(".ann").write_text(ann, encoding="utf-8")
    return tmp_path / "corpus"


def test_reader_yields_examples(nlp, corpus_dir):
    corpus = create_brat_corpus(str(corpus_dir), label_schema="maccrobat_medication")
    examples = list(corpus(nlp))
    assert len(examples) == 3 and all(isinstance(e, Example) for e in examples)
    first = examples[0]
    assert first.predicted.text == first.reference.text
    assert not first.predicted.ents
    assert [(e.text, e.label_) for e in first.reference.ents] == [("aspirin", "Medication"), ("81 mg", "Dosage")]
    assert first.reference._.relations[0]["label"] == "Dosage-Drug"
    # "5mg": the entity "5mg" is on token edges only as two tokens; Example aligns them
    second = examples[1]
    assert [(e.text, e.label_) for e in second.reference.ents] == [("Warfarin", "Medication"), ("5mg", "Dosage"), ("daily", "Frequency")]
    assert {r["label"] for r in second.reference._.relations} == {"Dosage-Drug", "Frequency-Drug"}
    tags = second.get_aligned_ner()
    assert tags[:3] == ["U-Medication", "B-Dosage", "L-Dosage"]


def test_reader_limit_shuffle_and_flat(nlp, corpus_dir):
    assert len(list(create_brat_corpus(corpus_dir, limit=2)(nlp))) == 2
    assert len(list(create_brat_corpus(corpus_dir, recursive=False)(nlp))) == 2
    corpus = create_brat_corpus(corpus_dir, shuffle=True)
    assert sorted(e.reference.text for e in corpus(nlp)) == sorted(t for t, _ in DOCS.values())


def test_reader_augmenter(nlp, corpus_dir):
    def twice(nlp, example):
        yield example
        yield example

    assert len(list(create_brat_corpus(corpus_dir, augmenter=twice)(nlp))) == 6


def test_reader_resolves_from_config(nlp, corpus_dir):
    config = {"train": {"@readers": "spacy_softprompt.BratCorpus.v1", "path": str(corpus_dir), "label_schema": "ddi2013", "limit": 1}}
    resolved = registry.resolve(config)
    assert isinstance(resolved["train"], BratCorpus)
    assert resolved["train"].schema.name == "ddi2013"


def test_reader_strict(nlp, tmp_path):
    (tmp_path / "x.txt").write_text("abc", encoding="utf-8")
    (tmp_path / "x.ann").write_text("T1\tA 0 9\tabc\n", encoding="utf-8")
    with pytest.raises(BratError):
        list(create_brat_corpus(tmp_path, strict=True)(nlp))
    assert len(list(create_brat_corpus(tmp_path)(nlp))) == 1


def test_convert_and_export_round_trip(nlp, corpus_dir, tmp_path):
    stats = convert_brat_dir(corpus_dir, tmp_path / "out" / "train.spacy", nlp, None, False)
    assert isinstance(stats, ConversionStats) and stats.documents == 3 and stats.entities == 7
    assert stats.relations == 3
    docs = load_docbin(tmp_path / "out" / "train.spacy", nlp)
    assert [d._.brat["doc_id"] for d in docs] == ["a", "b c", "sub/d"]
    assert all(isinstance(d._.relations, list) for d in docs)
    assert ENTITY_SPANS_KEY in docs[0].spans
    paths = export_docbin(tmp_path / "out" / "train.spacy", tmp_path / "exported")
    assert [p.relative_to(tmp_path / "exported").as_posix() for p in paths] == ["a.txt", "b c.txt", "sub/d.txt"]
    original = read_brat_dir(corpus_dir, recursive=True, collector=IssueCollector(log=False))
    exported = read_brat_dir(tmp_path / "exported", recursive=True, strict=True)
    assert all(same_annotations(a, b) for a, b in zip(original, exported))
    assert (tmp_path / "exported" / "sub" / "d.txt").read_bytes() == DOCS["sub/d"][0].encode("utf-8")


def test_convert_with_schema_and_stats_json(nlp, corpus_dir, tmp_path):
    stats = convert_brat_dir(corpus_dir, tmp_path / "t.spacy", nlp, "maccrobat_medication", False)
    assert stats.entities == 6 and stats.entities_dropped == 1 and stats.relations == 3
    data = json.loads(stats.to_json())
    assert data["documents"] == 3 and data["issue_counts"] == {"span_text": 1}
    assert data["issues"][0]["ann_id"] == "T2" and data["issues"][0]["file"].endswith("d.ann")
    text = str(stats)
    assert "documents: 3" in text and "span text disagrees" in text
    assert ConversionStats.from_dict(data).to_dict() == data


def test_convert_strict_raises_and_writes_nothing(nlp, corpus_dir, tmp_path):
    with pytest.raises(BratError, match="d.ann:2"):
        convert_brat_dir(corpus_dir, tmp_path / "t.spacy", nlp, None, True)
    assert not (tmp_path / "t.spacy").exists()


def test_convert_empty_folder_raises(tmp_path):
    with pytest.raises(BratError, match="no brat documents"):
        convert_brat_dir(tmp_path, tmp_path / "t.spacy")


def test_read_brat_docs_collects_stats(nlp, corpus_dir):
    stats = ConversionStats()
    docs = list(read_brat_docs(corpus_dir, nlp, stats=stats))
    assert len(docs) == 3 and stats.documents == 3 and stats.span_text_mismatches == 1
    merged = ConversionStats().merge(stats).merge(stats)
    assert merged.documents == 6 and len(merged.issues) == 2
