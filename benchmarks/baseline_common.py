"""Shared pieces of the peer baselines (``baseline_hf_tokcls.py``, ``baseline_spacy_cnn.py``).

Both baselines train on the same DocBins as the package's pipelines and score
dev with the package's n2c2 scorer (:func:`spacy_softprompt.scoring.score_documents`
on character offsets), so their figures sit next to the package's own.
"""
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_common as bc  # noqa: E402

CORPUS = bc.REPO / "corpus"
DEFAULT_TRAIN = CORPUS / "maccrobat2020-maccrobat_medication-train.spacy"
DEFAULT_DEV = CORPUS / "maccrobat2020-maccrobat_medication-dev.spacy"
#: the entity figures copied from the scorer's dict into each epoch / checkpoint entry
ENTITY_KEYS = tuple(f"ents_{mode}_{m}" for mode in ("strict", "lenient") for m in "prf")

Entity = Tuple[int, int, str]


def clinical_nlp():
    """A blank pipeline with the clinical tokenizer (what made the DocBins)."""
    from spacy_softprompt.data.readers import blank_clinical_nlp

    return blank_clinical_nlp()


def load_docs(path: Path, nlp, limit: Optional[int] = None) -> list:
    """The docs of a DocBin (the first ``limit`` when given)."""
    from spacy_softprompt.evaluation import load_gold_docs

    if not Path(path).is_file():
        raise SystemExit(f"error: no DocBin at {path} (make it with 'spacy project run convert' or pass --train/--dev)")
    docs = load_gold_docs(Path(path), nlp)
    return docs[:limit] if limit else docs


def count_entities(gold_docs: Sequence[Any], predicted: Iterable[Iterable[Entity]]) -> list:
    """Per gold doc, the package's n2c2 counts (:class:`spacy_softprompt.scoring.N2C2Counts`)
    of its predicted ``(start, end, label)`` list (no relations: those counts stay empty)."""
    from spacy_softprompt.scoring import count_document, doc_annotations, make_annotations

    predicted = list(predicted)
    if len(predicted) != len(gold_docs):
        raise ValueError(f"{len(predicted)} predictions for {len(gold_docs)} gold docs")
    return [count_document(doc_annotations(gold), make_annotations(pred)) for gold, pred in zip(gold_docs, predicted)]


def sum_scores(counts: Sequence[Any]) -> Dict[str, Any]:
    """The n2c2 score dict of per-doc counts summed (micro over all docs)."""
    from spacy_softprompt.scoring import N2C2Counts

    total = N2C2Counts()
    for c in counts:
        total += c
    return total.scores()


# ------------------------------------------------------------------ metrics file for `compare`
#: the per-document counts a baseline writes (it predicts no relations)
ENTITY_COUNT_KEYS = ("ents_strict", "ents_lenient")


def default_metrics_path(output: Path, seed: int) -> Path:
    """``<results stem>-seed<seed>.metrics.json`` next to the results JSON (the seed is
    not repeated when the stem already ends with it)."""
    output = Path(output)
    stem = output.stem if output.stem.endswith(f"seed{seed}") else f"{output.stem}-seed{seed}"
    return output.with_name(f"{stem}.metrics.json")


def entity_metrics(gold_docs: Sequence[Any], counts: Sequence[Any], **extra: Any) -> Dict[str, Any]:
    """A metrics dict in the format of ``python -m spacy_softprompt evaluate --output``,
    entities only: ``ents_{strict,lenient}_{p,r,f}`` and ``ents_per_type`` (unrounded),
    ``n_docs``, ``n_words``, ``n_pred_entities``, ``lenient_matching`` and ``per_doc``
    (``ids`` = the gold docs' ids as ``evaluate`` computes them, ``ents_strict`` /
    ``ents_lenient`` rows); no ``rels_*`` keys, so ``compare`` leaves relations out."""
    from spacy_softprompt.per_doc import PER_DOC_KEY, doc_ids, per_doc_record

    scores = sum_scores(counts)
    metrics = {k: v for k, v in scores.items() if k.startswith("ents_")}
    metrics.update(
        n_docs=len(gold_docs),
        n_words=sum(len(doc) for doc in gold_docs),
        n_pred_entities=sum(c.total("ents_strict").pred for c in counts),
        lenient_matching="any",
        **extra,
    )
    metrics[PER_DOC_KEY] = per_doc_record(doc_ids(gold_docs), counts, keys=ENTITY_COUNT_KEYS)
    return metrics


def entities_only(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """An ``evaluate_pipeline`` metrics dict without its relation figures and counts
    (a pipeline without a relation extractor scores 0 there, which is not a result)."""
    from spacy_softprompt.per_doc import PER_DOC_KEY

    out = {k: v for k, v in metrics.items()
           if not k.startswith("rels_") and k != "n_pred_relations" and not k.startswith("n_candidates_")}
    if isinstance(out.get(PER_DOC_KEY), dict):
        out[PER_DOC_KEY] = {k: v for k, v in out[PER_DOC_KEY].items() if not k.startswith("rels_")}
    return out


def write_metrics(metrics: Dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf8")
    print(f"wrote {path} (per-document counts for 'python -m spacy_softprompt compare')")
    return path


def entity_summary(scores: Dict[str, Any], digits: int = 4) -> Dict[str, Optional[float]]:
    """Overall entity strict/lenient P/R/F1 of a scorer dict, rounded."""
    return {k: None if scores.get(k) is None else round(float(scores[k]), digits) for k in ENTITY_KEYS}


def per_type(scores: Dict[str, Any], digits: int = 4) -> Dict[str, Dict[str, Any]]:
    """Per entity type: strict/lenient P/R/F1 and gold/pred counts."""
    out = {}
    for label, v in (scores.get("ents_per_type") or {}).items():
        out[label] = {k: (round(float(v[k]), digits) if isinstance(v[k], float) else v[k])
                      for k in ("strict_p", "strict_r", "strict_f", "lenient_p", "lenient_r", "lenient_f", "gold", "pred")}
    return out


def corpus_stats(docs: Sequence[Any]) -> Dict[str, int]:
    """Docs, words, gold entities (span group) and how many of them ``doc.ents`` holds."""
    from spacy_softprompt.annotations import get_entities

    return {
        "docs": len(docs),
        "words": sum(len(d) for d in docs),
        "entities": sum(len(get_entities(d)) for d in docs),
        "entities_in_doc_ents": sum(len(d.ents) for d in docs),
    }


def fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def score_row(name: str, summary: Dict[str, Optional[float]]) -> List[str]:
    return [name] + [fmt(summary.get(k)) for k in ENTITY_KEYS]


SCORE_HEADER = ("", "strict P", "strict R", "strict F", "lenient P", "lenient R", "lenient F")
