"""Deterministic corpus subsets for the study.

* Few-shot subsets are **nested per seed**: the documents are put in one random
  order per seed (``random.Random(seed)``) and the first ``k`` are taken, so for
  the same seed the k=5 subset is contained in the k=10 subset, which is
  contained in the k=20 one, and so on; different seeds give different orders.
  Learning curves then differ from point to point only by the added documents.
* ``split_docbin`` holds out a dev set the same way (the first ``n_dev``
  documents of the seed's order), so a source corpus without a dev folder can
  still early-stop on in-domain data.

User data (``doc._.relations``, ``doc._.brat``) travels with the documents.
"""
import random
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, TypeVar, Union

PathLike = Union[str, Path]
T = TypeVar("T")


def seeded_order(n: int, seed: int, salt: str = "fewshot") -> List[int]:
    """The document order used for every subset of this seed (string-seeded, so
    the same on every Python version and platform)."""
    order = list(range(n))
    random.Random(f"spacy-softprompt-study:{salt}:{seed}").shuffle(order)
    return order


def subsample_indices(n: int, k: Optional[int], seed: int) -> List[int]:
    """Indices of the ``k`` documents of a few-shot subset, in corpus order.
    ``k=None`` (or ``k >= n``) keeps everything."""
    if k is None or k >= n:
        return list(range(n))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return sorted(seeded_order(n, seed)[:k])


def subsample(items: Sequence[T], k: Optional[int], seed: int) -> List[T]:
    return [items[i] for i in subsample_indices(len(items), k, seed)]


def _read(path: PathLike):
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    return list(DocBin().from_disk(path).get_docs(vocab))


def _write(docs, path: PathLike) -> Path:
    from spacy.tokens import DocBin

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(store_user_data=True, docs=docs).to_disk(path)
    return path


def corpus_size(path: PathLike) -> Tuple[int, int]:
    """(documents, tokens) of a ``.spacy`` file."""
    docs = _read(path)
    return len(docs), sum(len(d) for d in docs)


def subsample_docbin(in_path: PathLike, out_path: PathLike, k: Optional[int], seed: int) -> Tuple[int, int]:
    """Write the few-shot subset of ``in_path`` to ``out_path``; returns (docs, tokens)."""
    docs = subsample(_read(in_path), k, seed)
    _write(docs, out_path)
    return len(docs), sum(len(d) for d in docs)


def split_docbin(
    in_path: PathLike, train_out: PathLike, dev_out: PathLike, *, n_dev: int = 0, dev_fraction: float = 0.0, seed: int = 0
) -> Tuple[int, int]:
    """Hold out ``n_dev`` documents (or ``dev_fraction`` of them) as a dev set;
    returns (train docs, dev docs). Both outputs keep corpus order."""
    docs = _read(in_path)
    n = len(docs)
    if n_dev <= 0:
        n_dev = int(round(n * dev_fraction))
    if not 0 < n_dev < n:
        raise ValueError(f"{in_path}: cannot hold out {n_dev} of {n} documents")
    dev_ids = set(seeded_order(n, seed, salt="split")[:n_dev])
    _write([d for i, d in enumerate(docs) if i not in dev_ids], train_out)
    _write([d for i, d in enumerate(docs) if i in dev_ids], dev_out)
    return n - n_dev, n_dev
