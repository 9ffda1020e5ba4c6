"""Evaluate a pipeline on gold data (DocBin or brat folder) with the n2c2 scorer."""
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from spacy.util import minibatch

from .annotations import ENTITY_SPANS_KEY, get_entities, get_relations
from .devices import synchronize
from .per_doc import PER_DOC_KEY, doc_ids, per_doc_record
from .scoring import N2C2Counts, count_examples

logger = logging.getLogger(__name__)


def check_gold_path(path: Path) -> Path:
    """``path`` if it is a ``.spacy`` file, else :class:`BratError` naming it (checked before any model loads)."""
    from .data.errors import BratError

    path = Path(path)
    if not path.exists():
        raise BratError(f"{path}: no such gold file")
    if path.is_dir() or path.suffix != ".spacy":
        raise BratError(f"{path}: expected a .spacy file written by 'python -m spacy_softprompt convert'")
    return path


def load_gold_docs(path: Path, nlp: Language) -> List[Doc]:
    """Gold docs from a ``.spacy`` DocBin (as written by ``convert``)."""
    from .data.errors import BratError

    path = check_gold_path(path)
    try:
        return list(DocBin().from_disk(path).get_docs(nlp.vocab))
    except Exception as err:  # noqa: BLE001 - a damaged file: named
        raise BratError(f"{path}: not a readable .spacy file ({type(err).__name__}); convert the gold again") from None


def _labels(docs: Iterable[Doc], spans_key: str) -> Set[str]:
    labels: Set[str] = set()
    for doc in docs:
        labels.update(span.label_ for span in get_entities(doc, spans_key))
        labels.update(str(rel["label"]) for rel in get_relations(doc))
    return labels


def _pipeline_labels(nlp: Language) -> Set[str]:
    labels: Set[str] = set()
    for _, proc in nlp.pipeline:
        try:
            labels.update(str(label) for label in getattr(proc, "labels", ()) or ())
        except Exception:  # noqa: BLE001 - a component without labels
            continue
    return labels


def label_mismatch(nlp: Language, predicted: List[Doc], gold: List[Doc], spans_key: str = ENTITY_SPANS_KEY) -> Optional[str]:
    """A warning when no label the pipeline predicts (or, when it predicted
    nothing, knows) occurs among the gold labels: gold of another schema scores 0."""
    gold_labels = _labels(gold, spans_key)
    ours = _labels(predicted, spans_key) or _pipeline_labels(nlp)
    if not gold_labels or not ours or ours & gold_labels:
        return None

    def show(labels: Set[str]) -> str:
        names = sorted(labels)
        return ", ".join(names[:6]) + (f", ... ({len(names) - 6} more)" if len(names) > 6 else "")

    return (f"no label of the pipeline ({show(ours)}) occurs in the gold data ({show(gold_labels)}): "
            "is the gold from another schema? Scores against it are meaningless")


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
    predicted, timing = _timed_pipe(nlp, [doc.text for doc in gold_docs], batch_size)
    seconds = time.perf_counter() - start
    per_doc = _count_per_doc(predicted, gold_docs, spans_key, lenient_matching)
    scores = sum(per_doc, N2C2Counts()).scores()
    n_words = sum(len(doc) for doc in gold_docs)
    scores.update(
        n_docs=len(gold_docs),
        n_words=n_words,
        seconds=round(seconds, 3),
        words_per_second=round(n_words / seconds, 1) if seconds > 0 else None,
        lenient_matching=lenient_matching,
        n_pred_entities=sum(len(get_entities(doc, spans_key)) for doc in predicted),
        n_pred_relations=sum(len(get_relations(doc)) for doc in predicted),
        **timing,
    )
    for name, proc in nlp.pipeline:
        if hasattr(proc, "candidate_index"):  # relation_extractor: pairs it had to classify
            scores[f"n_candidates_{name}"] = sum(
                len(proc.candidate_index(get_entities(doc, proc.cfg["spans_key"]))[1]) for doc in predicted
            )
    scores[PER_DOC_KEY] = per_doc_record(doc_ids(gold_docs), per_doc)
    flat = flat_entity_scores(predicted, gold_docs, spans_key, lenient_matching)
    if flat is not None:
        scores["flat_entities"] = flat
    warning = label_mismatch(nlp, predicted, gold_docs, spans_key)
    if warning:
        logger.warning("%s", warning)
        scores["warnings"] = [warning]
    return scores


def _count_per_doc(predicted: Iterable[Doc], gold_docs: List[Doc], spans_key: str, lenient_matching: str) -> List[N2C2Counts]:
    """Each document's counts (their sum is the corpus's)."""
    return [
        count_examples([Example(pred, gold)], spans_key, lenient_matching=lenient_matching)
        for pred, gold in zip(predicted, gold_docs)
    ]


def flat_entity_scores(
    predicted: List[Doc], gold_docs: List[Doc], spans_key: str = ENTITY_SPANS_KEY, lenient_matching: str = "any"
) -> Optional[Dict[str, Any]]:
    """Entity scores of the non-overlapping view (``doc.ents``) of predictions whose
    span group holds nested or overlapping entities (MRC decodes them), against the
    same gold, with each document's entity counts (``per_doc``, for paired bootstrap
    comparisons with flat systems); None when every prediction is flat already.
    Relations are unchanged."""
    if all(len(get_entities(doc, spans_key)) == len(doc.ents) for doc in predicted):
        return None

    def flat_view(doc: Doc) -> Doc:
        flat = doc.copy()
        flat.spans[spans_key] = list(flat.ents)
        return flat

    per_doc = _count_per_doc((flat_view(pred) for pred in predicted), gold_docs, spans_key, lenient_matching)
    scores = sum(per_doc, N2C2Counts()).scores()
    out: Dict[str, Any] = {k: v for k, v in scores.items() if k.startswith("ents_") and not isinstance(v, dict)}
    out["n_pred_entities"] = sum(len(doc.ents) for doc in predicted)
    out[PER_DOC_KEY] = per_doc_record(doc_ids(gold_docs), per_doc, keys=("ents_strict", "ents_lenient"))
    return out


def _timed_pipe(nlp: Language, texts: List[str], batch_size: int):
    """``nlp.pipe(texts, batch_size)`` run batch by batch and component by
    component (same output), with the seconds each took: ``seconds_per_component``
    (``tokenizer`` first) and ``seconds_first_batch`` (one-time costs such as CUDA
    initialisation and kernel compilation land there)."""
    per_component: Dict[str, float] = {"tokenizer": 0.0}
    first_batch = None
    predicted: List[Doc] = []
    for batch in minibatch(texts, size=batch_size):
        batch_start = time.perf_counter()
        docs = [nlp.make_doc(text) for text in batch]
        per_component["tokenizer"] += time.perf_counter() - batch_start
        for name, proc in nlp.pipeline:
            start = time.perf_counter()
            docs = list(proc.pipe(docs, batch_size=batch_size)) if hasattr(proc, "pipe") else [proc(d) for d in docs]
            synchronize()
            per_component[name] = per_component.get(name, 0.0) + time.perf_counter() - start
        if first_batch is None:
            first_batch = time.perf_counter() - batch_start
        predicted.extend(docs)
    timing = {
        "seconds_per_component": {k: round(v, 4) for k, v in per_component.items()},
        "seconds_first_batch": round(first_batch or 0.0, 4),
    }
    return predicted, timing


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
    from .loading import load_pipeline

    check_gold_path(data_path)
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = load_pipeline(model)
    scores = evaluate_pipeline(nlp, load_gold_docs(data_path, nlp), batch_size=batch_size, lenient_matching=lenient_matching)
    scores["model"] = str(model)
    scores["pipeline"] = nlp.pipe_names
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(scores, indent=2, sort_keys=True), encoding="utf8")
    return scores
