"""Round trips and alignment on the shared public corpora (skipped when they are absent).

Keep-everything: parse(write(doc_to_brat(brat_to_doc(x)))) == parse(x) for every
document of every corpus. With the corpus's schema: every entity and relation the
schema keeps comes back with byte-exact offsets.
"""
from collections import Counter

import pytest
from spacy.tokens import DocBin

from spacy_softprompt.data.brat import parse_ann, read_brat_dir, write_ann
from spacy_softprompt.data.docs import brat_to_doc, doc_to_brat, normalize_extensions
from spacy_softprompt.data.errors import IssueCollector
from spacy_softprompt.data.schema import apply_schema, load_schema
from spacy_softprompt.data.stats import ConversionStats

pytestmark = pytest.mark.corpora

CORPORA = {
    "maccrobat2020": ("maccrobat_medication", 162),
    "ddi2013": ("ddi2013", 926),
    "fda_ars": ("fda_ars", 239),
    "chia": ("chia", 308),
}


@pytest.fixture(scope="module", params=sorted(CORPORA))
def corpus(request, corpora_dir):
    name = request.param
    collector = IssueCollector(log=False)
    docs = read_brat_dir(corpora_dir / name, recursive=True, collector=collector)
    return name, docs, collector.issues


def test_corpus_reads_with_only_span_text_issues(corpus):
    name, docs, issues = corpus
    assert len(docs) == CORPORA[name][1]
    kinds = Counter(i.kind for i in issues)
    assert set(kinds) <= {"span_text"} and kinds["span_text"] <= 5, issues


def test_keep_everything_round_trip(nlp, corpus):
    name, docs, _ = corpus
    stats = ConversionStats()
    collector = IssueCollector(log=False)
    for brat_doc in docs:
        doc = brat_to_doc(nlp, brat_doc, collector=collector, stats=stats)
        back = parse_ann(write_ann(doc_to_brat(doc)), brat_doc.text, brat_doc.doc_id, collector=IssueCollector(log=False))
        assert back == brat_doc, brat_doc.doc_id
    assert stats.documents == len(docs)
    assert stats.aligned_rate >= 0.995, stats.summary()
    assert stats.tokenizer_rate >= 0.99, stats.summary()
    # what stays unaligned starts or ends in whitespace (and is written back anyway)
    assert all("whitespace" in i.message for i in collector.issues if i.kind == "alignment")


def _view(mapped):
    ents = Counter((e.start, e.end, label, tuple(e.fragments)) for e, label in mapped.entities)
    rels = Counter((r.label, (r.arg1.start, r.arg1.end), (r.arg2.start, r.arg2.end)) for r in mapped.relations)
    return ents, rels


def test_schema_round_trip(nlp, corpus):
    name, docs, _ = corpus
    schema = load_schema(CORPORA[name][0])
    stats = ConversionStats()
    for brat_doc in docs:
        doc = brat_to_doc(nlp, brat_doc, schema, collector=IssueCollector(log=False), stats=stats)
        back = parse_ann(write_ann(doc_to_brat(doc)), brat_doc.text, collector=IssueCollector(log=False))
        assert _view(apply_schema(back, None)) == _view(apply_schema(brat_doc, schema)), brat_doc.doc_id
    assert stats.relations > 0 and stats.entities > 0
    assert stats.aligned_rate >= 0.995, stats.summary()


def test_docbin_round_trip_sample(nlp, corpus):
    name, docs, _ = corpus
    sample = docs[:: max(1, len(docs) // 10)]
    built = [brat_to_doc(nlp, d, collector=IssueCollector(log=False)) for d in sample]
    data = DocBin(store_user_data=True, docs=built).to_bytes()
    for brat_doc, loaded in zip(sample, DocBin().from_bytes(data).get_docs(nlp.vocab)):
        normalize_extensions(loaded)
        assert doc_to_brat(loaded) == brat_doc
