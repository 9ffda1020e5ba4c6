"""Per-document counts in a metrics JSON (the ``"per_doc"`` key), for paired tests.

``evaluate`` (and every evaluation of a study run) writes, beside the usual
micro scores, the micro totals of every gold document::

    "per_doc": {
      "ids": ["train/123", "train/124", ...],          # one per document, unique
      "ents_strict":  [[pred, pred_tp, gold, gold_tp], ...],   # one row per id
      "ents_lenient": [[...], ...],
      "rels_strict":  [[...], ...],
      "rels_lenient": [[...], ...]
    }

A row holds :class:`spacy_softprompt.scoring.PRCounts` summed over all labels
of one document: precision = sum(pred_tp) / sum(pred), recall = sum(gold_tp) /
sum(gold), so the totals of the rows give the file's micro scores back. A key
may be left out (a system without relations): it is then not compared. Ids
are the gold documents' ``doc._.brat["doc_id"]`` (else ``"#<index>"``); two
files are paired by id. A baseline script can write the same structure with
:func:`per_doc_record`, or give ``"per_doc"`` as ``{doc_id: counts.to_dict()}``
(per-label :meth:`N2C2Counts.to_dict` form), which :func:`read_per_doc` also
accepts.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .scoring import N2C2Counts

PER_DOC_KEY = "per_doc"
COUNT_KEYS = ("ents_strict", "ents_lenient", "rels_strict", "rels_lenient")


def doc_ids(docs: Sequence[Any]) -> List[str]:
    """``doc._.brat["doc_id"]`` of each Doc, else ``"#<index>"``; all ``"#<index>"``
    when the ids are missing for some or not unique."""
    ids = []
    for doc in docs:
        info = doc._.brat if doc.has_extension("brat") else None
        ids.append(str(info.get("doc_id") or "") if isinstance(info, Mapping) else "")
    if all(ids) and len(set(ids)) == len(ids):
        return ids
    return [f"#{i}" for i in range(len(docs))]


def per_doc_record(
    ids: Sequence[str], counts: Sequence[N2C2Counts], keys: Sequence[str] = COUNT_KEYS
) -> Dict[str, Any]:
    """The ``"per_doc"`` value for documents ``ids`` with their counts; ``keys``
    (default all four) limits the counts written, e.g. ``("ents_strict",
    "ents_lenient")`` for a system without relations."""
    if len(ids) != len(counts):
        raise ValueError(f"{len(ids)} ids for {len(counts)} documents")
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique")
    unknown = [k for k in keys if k not in COUNT_KEYS]
    if unknown:
        raise ValueError(f"unknown counts keys {unknown}; expected some of {list(COUNT_KEYS)}")
    out: Dict[str, Any] = {"ids": [str(i) for i in ids]}
    for key in keys:
        out[key] = [c.total(key).to_list() for c in counts]
    return out


@dataclass
class PerDoc:
    """Per-document totals: ``counts[key]`` is an int array of shape (documents, 4)."""

    ids: List[str]
    counts: Dict[str, np.ndarray]

    def reorder(self, ids: Sequence[str]) -> "PerDoc":
        """The same counts in the order of ``ids`` (which must be the same set)."""
        if list(ids) == self.ids:
            return self
        if set(ids) != set(self.ids) or len(ids) != len(self.ids):
            missing, extra = sorted(set(ids) - set(self.ids)), sorted(set(self.ids) - set(ids))
            raise ValueError(f"documents differ: missing {missing[:5]}, extra {extra[:5]}")
        index = {doc_id: i for i, doc_id in enumerate(self.ids)}
        order = [index[i] for i in ids]
        return PerDoc(list(ids), {k: v[order] for k, v in self.counts.items()})

    def total(self, key: str) -> np.ndarray:
        return self.counts[key].sum(axis=0)


def read_per_doc(metrics: Mapping[str, Any], source: str = "metrics") -> PerDoc:
    """The per-document counts of a metrics dict (see the module docstring for
    the two accepted forms); ``ValueError`` when it has none."""
    data = metrics.get(PER_DOC_KEY)
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{source}: no per-document counts (key {PER_DOC_KEY!r}); evaluate the model again with this version"
        )
    if "ids" in data:
        ids = [str(i) for i in data["ids"]]
        counts = {}
        for key in COUNT_KEYS:
            if key not in data:  # e.g. a baseline without relations
                continue
            array = np.asarray(data[key], dtype=np.int64).reshape(-1, 4)
            if len(array) != len(ids):
                raise ValueError(f"{source}: {PER_DOC_KEY}.{key} has {len(array)} rows for {len(ids)} ids")
            counts[key] = array
    else:
        ids = [str(i) for i in data]
        per = [N2C2Counts.from_dict(value) for value in data.values()]
        counts = {key: np.asarray([c.total(key).to_list() for c in per], dtype=np.int64).reshape(-1, 4) for key in COUNT_KEYS}
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: document ids in {PER_DOC_KEY} are not unique")
    return PerDoc(ids, counts)


def stack(per_docs: Sequence[PerDoc], key: str, ids: Optional[Sequence[str]] = None) -> np.ndarray:
    """Counts of ``key`` of several runs (seeds) on the same documents, paired by id:
    shape (runs, documents, 4), documents in the order of ``ids`` (default: the first run's)."""
    if not per_docs:
        raise ValueError("no runs")
    if any(key not in p.counts for p in per_docs):
        raise ValueError(f"no per-document {key} counts in every run")
    ids = list(ids) if ids is not None else per_docs[0].ids
    return np.stack([p.reorder(ids).counts[key] for p in per_docs])
