"""Corpus readers: brat folders as training Examples, and brat <-> DocBin conversion.

* ``spacy_softprompt.BratCorpus.v1`` (``[corpora.train]`` in a config) trains
  straight from a brat folder::

      [corpora.train]
      @readers = "spacy_softprompt.BratCorpus.v1"
      path = ${paths.train}
      label_schema = "maccrobat_medication"

  (The argument is ``label_schema``, not ``schema``: spaCy validates reader
  arguments with pydantic, where a field called ``schema`` is not allowed.)

* :func:`convert_brat_dir` / :func:`export_docbin` / :func:`score_brat_dirs` back
  ``python -m spacy_softprompt convert IN_DIR OUT.spacy --schema NAME [--strict]``,
  ``export IN.spacy OUT_DIR`` and ``score GOLD_DIR PRED_DIR --schema NAME``.
"""
import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

from .brat import BratDocument, iter_brat_dir, read_brat_dir
from .docs import brat_to_doc, docs_to_brat_dir, normalize_extensions
from .errors import BratError, IssueCollector
from .schema import Schema, apply_schema, load_schema
from .stats import ConversionStats
from .tokenizer import build_clinical_tokenizer

PathLike = Union[str, Path]
SchemaLike = Union[None, str, Path, Schema]


def blank_clinical_nlp(lang: str = "en") -> Language:
    """A blank pipeline with the clinical tokenizer (what conversion uses by default)."""
    nlp = spacy.blank(lang)
    nlp.tokenizer = build_clinical_tokenizer(nlp)
    return nlp


class BratCorpus:
    """Yields ``Example(predicted=nlp.make_doc(text), reference=annotated doc)`` per document.

    The folder is read once (issues logged then, or raised when ``strict``);
    reference docs are rebuilt with the pipeline's own tokenizer at each call.
    """

    def __init__(
        self,
        path: PathLike,
        schema: SchemaLike = None,
        limit: int = 0,
        shuffle: bool = False,
        recursive: bool = True,
        split_gold_boundaries: bool = True,
        strict: bool = False,
        augmenter: Optional[Callable[[Language, Example], Iterable[Example]]] = None,
    ) -> None:
        self.path = Path(path)
        self.schema = load_schema(schema)
        self.limit = limit
        self.shuffle = shuffle
        self.recursive = recursive
        self.split_gold_boundaries = split_gold_boundaries
        self.strict = strict
        self.augmenter = augmenter
        self._docs: Optional[List[BratDocument]] = None

    def documents(self) -> List[BratDocument]:
        if self._docs is None:
            collector = IssueCollector(strict=self.strict)
            self._docs = read_brat_dir(self.path, recursive=self.recursive, collector=collector)
        return self._docs

    def __call__(self, nlp: Language) -> Iterator[Example]:
        docs = list(self.documents())
        if self.shuffle:
            random.shuffle(docs)
        if self.limit >= 1:
            docs = docs[: self.limit]
        collector = IssueCollector(strict=self.strict, log=False)
        for brat_doc in docs:
            reference = brat_to_doc(nlp, brat_doc, self.schema, self.split_gold_boundaries, collector=collector)
            example = Example(nlp.make_doc(brat_doc.text), reference)
            if self.augmenter is None:
                yield example
            else:
                yield from self.augmenter(nlp, example)


@registry.readers("spacy_softprompt.BratCorpus.v1")
def create_brat_corpus(
    path: Union[str, Path],
    label_schema: Optional[str] = None,
    limit: int = 0,
    shuffle: bool = False,
    recursive: bool = True,
    split_gold_boundaries: bool = True,
    strict: bool = False,
    augmenter: Optional[Callable[[Language, Example], Iterable[Example]]] = None,
) -> Callable[[Language], Iterator[Example]]:
    """Registered reader: training Examples straight from a brat folder.

    ``label_schema`` is a shipped schema name or a JSON path (None keeps
    everything); ``limit`` 0 reads all documents.
    """
    return BratCorpus(path, label_schema, limit, shuffle, recursive, split_gold_boundaries, strict, augmenter)


def read_brat_docs(
    in_dir: PathLike,
    nlp: Optional[Language] = None,
    schema: SchemaLike = None,
    strict: bool = False,
    recursive: bool = True,
    split_gold_boundaries: bool = True,
    stats: Optional[ConversionStats] = None,
    limit: int = 0,
) -> Iterator[Doc]:
    """Annotated Docs for the documents of a brat folder (sorted by path; the first
    ``limit`` when ``limit`` > 0); counts and issues go to ``stats``."""
    nlp = nlp if nlp is not None else blank_clinical_nlp()
    schema = load_schema(schema)
    stats = stats if stats is not None else ConversionStats()
    collector = IssueCollector(strict=strict)
    try:
        for i, brat_doc in enumerate(iter_brat_dir(in_dir, recursive=recursive, collector=collector)):
            if limit > 0 and i >= limit:
                break
            yield brat_to_doc(nlp, brat_doc, schema, split_gold_boundaries, collector=collector, stats=stats)
    finally:
        stats.add_issues(collector.issues)


def convert_brat_dir(
    in_dir: PathLike,
    out_path: PathLike,
    nlp: Optional[Language] = None,
    schema: SchemaLike = None,
    strict: bool = False,
    recursive: bool = True,
    split_gold_boundaries: bool = True,
    limit: int = 0,
) -> ConversionStats:
    """Convert a brat folder (searched recursively) to a ``.spacy`` DocBin with user
    data (``doc._.relations``, ``doc._.brat``); returns the stats.

    ``nlp`` defaults to a blank English pipeline with the clinical tokenizer;
    ``schema`` is a name, a path, a :class:`Schema` or None (keep everything);
    ``limit`` > 0 converts the first documents only. In strict mode the first
    issue raises :class:`BratError` and nothing is written.
    """
    stats = ConversionStats()
    docbin = DocBin(store_user_data=True)
    for doc in read_brat_docs(in_dir, nlp, schema, strict, recursive, split_gold_boundaries, stats, limit):
        docbin.add(doc)
    if stats.documents == 0:
        raise BratError(f"no brat documents (.txt files) found in {in_dir}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    docbin.to_disk(out_path)
    return stats


def load_docbin(in_path: PathLike, nlp: Optional[Language] = None) -> List[Doc]:
    """The Docs of a ``.spacy`` file, with ``doc._.relations``/``doc._.brat`` as lists again."""
    nlp = nlp if nlp is not None else blank_clinical_nlp()
    docs = list(DocBin().from_disk(in_path).get_docs(nlp.vocab))
    for doc in docs:
        normalize_extensions(doc)
    return docs


def export_docbin(in_path: PathLike, out_dir: PathLike, nlp: Optional[Language] = None) -> int:
    """Write the Docs of a ``.spacy`` file (gold or predicted) as brat ``.txt``/``.ann``
    pairs named after ``doc._.brat["doc_id"]``; returns the number of documents."""
    return len(docs_to_brat_dir(load_docbin(in_path, nlp), out_dir))


def brat_annotations(
    doc: BratDocument, schema: SchemaLike = None, accept_target_labels: bool = False
) -> Dict[str, List[Any]]:
    """``{"entities": [(start, end, label)], "relations": [(label, arg1, arg2)]}`` of a
    brat document after schema mapping (no tokenization: offsets as in the file).

    With ``accept_target_labels`` (predictions written by a pipeline), annotations
    that already carry the schema's target labels are kept as they are too.
    """
    schema = load_schema(schema)
    mapped = apply_schema(doc, schema)
    labels = {ent.id: label for ent, label in mapped.entities}
    entities = [(e.start, e.end, label) for e, label in mapped.entities]
    relations = [
        (r.label, (r.arg1.start, r.arg1.end, labels[r.arg1.id]), (r.arg2.start, r.arg2.end, labels[r.arg2.id]))
        for r in mapped.relations
    ]
    if schema is not None and accept_target_labels:
        direct = apply_schema(doc, None)
        targets = set(schema.entity_labels)
        kept = {e.id for e, label in direct.entities if e.type not in schema.entities and label in targets}
        entities += [(e.start, e.end, e.type) for e, _ in direct.entities if e.id in kept]
        for rel in direct.relations:
            pair = (rel.arg1.type, rel.arg2.type)
            if rel.label in schema.pairs and pair in schema.pairs[rel.label] and {rel.arg1.id, rel.arg2.id} <= kept:
                relations.append((rel.label, (rel.arg1.start, rel.arg1.end, pair[0]), (rel.arg2.start, rel.arg2.end, pair[1])))
    return {"entities": entities, "relations": relations}


def score_brat_dirs(
    gold_dir: PathLike,
    pred_dir: PathLike,
    schema: SchemaLike = None,
    lenient_matching: str = "any",
    recursive: bool = True,
) -> Dict[str, Any]:
    """n2c2-style strict/lenient scores of a predicted brat folder against a gold one.

    Documents pair by path (``doc_id``); a gold document without prediction
    scores as an empty prediction, a prediction without gold as extra
    predictions (both are logged). The schema maps the gold annotations; the
    predictions may use either the source types or the schema's target labels.
    """
    from ..scoring import score_documents

    schema = load_schema(schema)
    collector = IssueCollector()
    gold = {d.doc_id: d for d in read_brat_dir(gold_dir, recursive=recursive, collector=collector)}
    pred = {d.doc_id: d for d in read_brat_dir(pred_dir, recursive=recursive, collector=collector)}
    for doc_id in sorted(set(gold) ^ set(pred)):
        where = "predictions" if doc_id in gold else "gold"
        collector.report(doc_id, 0, "", f"document missing from the {where} folder", kind="missing_file")
    empty: Dict[str, List[Any]] = {"entities": [], "relations": []}
    pairs = [
        (
            brat_annotations(gold[d], schema) if d in gold else empty,
            brat_annotations(pred[d], schema, accept_target_labels=True) if d in pred else empty,
        )
        for d in sorted(set(gold) | set(pred))
    ]
    return score_documents(pairs, lenient_matching=lenient_matching)
