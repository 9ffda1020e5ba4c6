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
from .scoring import score_examples


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
    the relation extractor). Adds ``n_docs``, ``n_words``, ``seconds``, ``words_per_second``."""
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


# brat folder against brat folder: the `score` command (moved; importable from here as before)
from .brat_scoring import score_brat_dirs  # noqa: E402,F401
