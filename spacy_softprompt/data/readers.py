"""Corpus readers: brat folders as training Examples, and brat <-> DocBin conversion.

* ``spacy_softprompt.BratCorpus.v1`` (``[corpora.train]`` in a config) trains
  straight from a brat folder::

      [corpora.train]
      @readers = "spacy_softprompt.BratCorpus.v1"
      path = ${paths.train}
      label_schema = "maccrobat_medication"

  (The argument is ``label_schema``, not ``schema``: spaCy validates reader
  arguments with pydantic, where a field called ``schema`` is not allowed.)

* :func:`convert_brat_dir` / :func:`export_docbin` back
  ``python -m spacy_softprompt convert IN_DIR OUT.spacy --schema NAME [--strict]``
  and ``export IN.spacy OUT_DIR``.
"""
import random
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

from .brat import BratDocument, iter_brat_dir, read_brat_dir
from .docs import brat_to_doc, docs_to_brat_dir, normalize_extensions
from .errors import BratError, IssueCollector
from .schema import Schema, load_schema
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
            try:
                doc = brat_to_doc(nlp, brat_doc, schema, split_gold_boundaries, collector=collector, stats=stats)
            except BratError:
                raise
            except Exception as err:  # noqa: BLE001 - one document that cannot be built costs that document
                collector.report(_doc_file(brat_doc), 0, "", f"document skipped: {_reason(err)}", kind="skipped_document")
                continue
            yield doc
    finally:
        stats.add_issues(collector.issues)


def _doc_file(brat_doc: BratDocument) -> str:
    return brat_doc.source or brat_doc.doc_id or "?"


def _reason(err: BaseException) -> str:
    """The error type and the first line of its message, short (spaCy's E088 names no text)."""
    lines = str(err).strip().splitlines()
    message = lines[0] if lines else ""
    return f"{type(err).__name__}: {message[:160]}" if message else type(err).__name__


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
        skipped = [i for i in stats.issues if i.kind == "skipped_document"]
        if skipped:
            raise BratError(f"no document of {in_dir} could be converted ({len(skipped)} skipped; first: {skipped[0]})")
        raise BratError(f"no brat documents (.txt files) found in {in_dir}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    docbin.to_disk(out_path)
    return stats


def load_docbin(in_path: PathLike, nlp: Optional[Language] = None) -> List[Doc]:
    """The Docs of a ``.spacy`` file, with ``doc._.relations``/``doc._.brat`` as lists again."""
    nlp = nlp if nlp is not None else blank_clinical_nlp()
    if not Path(in_path).is_file():
        raise BratError(f"{in_path}: no such .spacy file")
    try:
        docs = list(DocBin().from_disk(in_path).get_docs(nlp.vocab))
    except Exception as err:  # noqa: BLE001 - a damaged or foreign file: named
        raise BratError(f"{in_path}: not a readable .spacy file ({type(err).__name__}); convert the data again") from None
    for doc in docs:
        normalize_extensions(doc)
    return docs


def export_docbin(
    in_path: PathLike, out_dir: PathLike, nlp: Optional[Language] = None, schema: SchemaLike = None
) -> List[Path]:
    """Write the Docs of a ``.spacy`` file (gold or predicted) as brat ``.txt``/``.ann``
    pairs named after ``doc._.brat["doc_id"]``; returns the ``.txt`` paths. With
    ``schema``, in the corpus's source form (types, attributes and events the
    schema maps from), else in the target labels."""
    return docs_to_brat_dir(load_docbin(in_path, nlp), out_dir, schema=load_schema(schema))
