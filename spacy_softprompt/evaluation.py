"""Evaluate a pipeline on gold data (DocBin or brat folder) with the n2c2 scorer."""
import json
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from .annotations import ENTITY_SPANS_KEY
from .per_doc import PER_DOC_KEY, doc_ids, per_doc_record
from .scoring import count_examples, score_examples


def load_gold_docs(path: Path, nlp: Language) -> List[Doc]:
    """Gold docs from a ``.spacy`` DocBin (as written by ``convert``)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".spacy":
        raise ValueError(f"{path}: expected a .spacy file written by 'python -m spacy_softprompt convert'.")
    return list(DocBin().from_disk(path).get_docs(nlp.vocab))


def evaluate_pipeline(
    nlp: Language,
    gold_docs: Iterable[Doc],
    *,
    batch_size: int = 8,
    lenient_matching: str = "any",
    spans_key: str = ENTITY_SPANS_KEY,
) -> Dict[str, Any]:
    """Run ``nlp`` on the gold texts and score end to end (predicted entities feed
    the relation extractor). Adds ``n_docs``, ``n_words``, ``seconds``, ``words_per_second``
    and ``per_doc``: each gold document's counts (:mod:`spacy_softprompt.per_doc`),
    for paired bootstrap comparisons."""
    gold_docs = list(gold_docs)
    start = time.perf_counter()
    predicted = list(nlp.pipe((doc.text for doc in gold_docs), batch_size=batch_size))
    seconds = time.perf_counter() - start
    examples = [Example(pred, gold) for pred, gold in zip(predicted, gold_docs)]
    scores = score_examples(examples, spans_key=spans_key, lenient_matching=lenient_matching)
    n_words = sum(len(doc) for doc in gold_docs)
    scores.update(
        n_docs=len(gold_docs),
        n_words=n_words,
        seconds=round(seconds, 3),
        words_per_second=round(n_words / seconds, 1) if seconds > 0 else None,
        lenient_matching=lenient_matching,
    )
    per_doc = [count_examples([eg], spans_key, lenient_matching=lenient_matching) for eg in examples]
    scores[PER_DOC_KEY] = per_doc_record(doc_ids(gold_docs), per_doc)
    return scores


def evaluate_model(
    model: str,
    data_path: Path,
    output: Optional[Path] = None,
    *,
    gpu_id: int = -1,
    batch_size: int = 8,
    lenient_matching: str = "any",
) -> Dict[str, Any]:
    """Load a pipeline (path or installed package), evaluate it, optionally write JSON."""
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(model)
    scores = evaluate_pipeline(nlp, load_gold_docs(data_path, nlp), batch_size=batch_size, lenient_matching=lenient_matching)
    scores["model"] = str(model)
    scores["pipeline"] = nlp.pipe_names
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(scores, indent=2, sort_keys=True), encoding="utf8")
    return scores


def score_brat_dirs(
    gold_dir: Path,
    pred_dir: Path,
    *,
    schema=None,
    lenient_matching: str = "any",
    strict: bool = False,
) -> Dict[str, Any]:
    """Score a predicted brat folder against a gold one (documents paired by relative
    path). A gold document without a prediction counts as predicting nothing and is
    listed under ``missing_predictions``; predictions without gold are listed under
    ``unmatched_predictions`` and not scored."""
    from .data.brat import read_brat_dir
    from .data.errors import IssueCollector
    from .data.schema import load_schema, mapped_annotations
    from .scoring import make_annotations, score_documents

    schema = load_schema(schema) if schema is not None else None
    collector = IssueCollector(strict=strict)
    gold = {d.doc_id: d for d in read_brat_dir(gold_dir, recursive=True, collector=collector)}
    pred = {d.doc_id: d for d in read_brat_dir(pred_dir, recursive=True, collector=collector)}
    empty = make_annotations()
    pairs = [
        (
            make_annotations(*mapped_annotations(doc, schema)),
            # Predictions may already carry the schema's target labels (a pipeline's output).
            make_annotations(*mapped_annotations(pred[doc_id], schema, accept_target_labels=True))
            if doc_id in pred
            else empty,
        )
        for doc_id, doc in sorted(gold.items())
    ]
    scores = score_documents(pairs, lenient_matching=lenient_matching)
    scores["n_docs"] = len(gold)
    scores["missing_predictions"] = sorted(set(gold) - set(pred))
    scores["unmatched_predictions"] = sorted(set(pred) - set(gold))
    scores["issues"] = len(collector.issues)
    return scores
