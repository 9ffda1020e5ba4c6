"""Shared pieces of the peer baselines (``baseline_hf_tokcls.py``, ``baseline_spacy_cnn.py``).

Both baselines train on the same DocBins as the package's pipelines and score
dev with the package's n2c2 scorer (:func:`spacy_softprompt.scoring.score_documents`
on character offsets), so their figures sit next to the package's own.
"""
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


def score_entities(gold_docs: Sequence[Any], predicted: Iterable[Iterable[Entity]]) -> Dict[str, Any]:
    """The package's n2c2 scores of predicted ``(start, end, label)`` lists against gold docs."""
    from spacy_softprompt.scoring import doc_annotations, make_annotations, score_documents

    pairs = [(doc_annotations(gold), make_annotations(pred)) for gold, pred in zip(gold_docs, predicted)]
    return score_documents(pairs)


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
