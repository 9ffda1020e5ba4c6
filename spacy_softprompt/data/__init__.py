"""Data layer: brat standoff, task schemas, clinical tokenizer, Doc conversion, corpus readers.

Nothing outside this package knows about brat. The modules:

* :mod:`.errors`    ``BratError``, ``BratIssue``, ``IssueCollector``
* :mod:`.brat`      pure-Python brat model, parser and writer
* :mod:`.schema`    task schemas (JSON): entity/relation selection and mapping
* :mod:`.tokenizer` ``spacy_softprompt.ClinicalTokenizer.v1`` and gold-boundary splitting
* :mod:`.docs`      brat document <-> ``Doc``
* :mod:`.stats`     conversion statistics
* :mod:`.readers`   ``spacy_softprompt.BratCorpus.v1``, DocBin conversion
"""
from .brat import BratDocument, parse_ann, read_brat_dir, read_brat_file, write_ann, write_brat_document
from .docs import brat_to_doc, doc_to_brat, docs_to_brat_dir, get_fragments, normalize_extensions
from .errors import BratError, BratIssue, IssueCollector
from .readers import convert_brat_dir, create_brat_corpus, export_docbin, read_brat_docs
from .schema import Schema, apply_schema, available_schemas, load_schema, mapped_annotations
from .stats import ConversionStats
from .tokenizer import create_clinical_tokenizer, split_at_boundaries

__all__ = [
    "BratDocument",
    "BratError",
    "BratIssue",
    "ConversionStats",
    "IssueCollector",
    "Schema",
    "apply_schema",
    "available_schemas",
    "brat_to_doc",
    "convert_brat_dir",
    "create_brat_corpus",
    "create_clinical_tokenizer",
    "doc_to_brat",
    "docs_to_brat_dir",
    "export_docbin",
    "get_fragments",
    "load_schema",
    "mapped_annotations",
    "normalize_extensions",
    "parse_ann",
    "read_brat_dir",
    "read_brat_docs",
    "read_brat_file",
    "split_at_boundaries",
    "write_ann",
    "write_brat_document",
]
