"""The study's results table: one JSON object per line (``.jsonl``), one line per run,
and a flat CSV copy written beside it.

A row holds the run's identity (``key``, ``signature``, ``experiment``, ``mode``,
``strategy``, ``backbone``, ``seed``, ``k``, ``prompt_length``, ``prompt_depth``,
``frozen``, corpus names), its cost (``trainable_params``, ``total_params``,
``wall_seconds``, ``train_seconds``, ``eval_seconds``, ``peak_mb``; a run resumed
from its checkpoint counts every sitting), ``status``
(``ok`` | ``failed``, then ``error_type``/``error``), the scorer's scalar keys
for the primary evaluation set at the top level and every evaluation set's full
scores under ``evaluations[name]``, with its per-document counts under
``evaluations[name]["per_doc"]`` (:mod:`spacy_softprompt.per_doc`; the report's
paired bootstrap reads them; the CSV leaves them out).
"""
import csv
import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

PathLike = Union[str, Path]

SCORE_KEYS = tuple(
    f"{kind}_{match}_{m}" for kind in ("ents", "rels") for match in ("strict", "lenient") for m in ("p", "r", "f")
)
F1_KEYS = ("ents_strict_f", "ents_lenient_f", "rels_strict_f", "rels_lenient_f")
EVAL_EXTRA_KEYS = ("n_docs", "n_words", "seconds", "words_per_second")

BASE_COLUMNS = (
    "key",
    "experiment",
    "status",
    "error_type",
    "mode",
    "strategy",
    "backbone",
    "device",
    "seed",
    "k",
    "n_train_docs",
    "n_train_words",
    "prompt_length",
    "prompt_depth",
    "frozen",
    "hard_prompt",
    "train_corpus",
    "dev_corpus",
    "primary_eval",
    "max_steps",
    "trainable_params",
    "total_params",
    "trainable_share",
    "wall_seconds",
    "train_seconds",
    "eval_seconds",
    "peak_mb",
    "peak_gpu_mb",
    "config",
    "config_sha256",
    "recipe",
    "seconds_per_step",
    "reused_from",
    "signature",
    "finished_at",
)


def read_results(path: PathLike) -> List[Dict[str, Any]]:
    """All rows of a ``.jsonl`` results file (or a ``.json`` list); a missing file
    is an empty table. A line that is not JSON (a run killed while writing) is
    skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf8")
    if path.suffix == ".json":
        data = json.loads(text) if text.strip() else []
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of result rows")
        return [dict(row) for row in data]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{number}: not a JSON line, skipped")
            continue
        if isinstance(row, dict):
            rows.append(whole_run_wall_seconds(row))
    return rows


def whole_run_wall_seconds(row: Dict[str, Any]) -> Dict[str, Any]:
    """A resumed run's row written before rows carried ``seconds_before_resume``
    holds only its last sitting in ``wall_seconds``; such a run took at least its
    training (``train_seconds`` spans every sitting) plus its evaluation, so that
    is its wall time. Other rows are returned unchanged."""
    if "resumed_after_step" not in row or "seconds_before_resume" in row:
        return row
    at_least = float(row.get("train_seconds") or 0.0) + float(row.get("eval_seconds") or 0.0)
    if float(row.get("wall_seconds") or 0.0) >= at_least:
        return row
    return {**row, "wall_seconds": round(at_least, 2)}


def append_result(path: PathLike, row: Dict[str, Any]) -> None:
    """Append one row as one line (a single write, so concurrent appends stay whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, sort_keys=True, default=_json_default) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf8"))
    finally:
        os.close(fd)


def _json_default(value: Any):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def latest_rows(rows: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per ``key``: the last successful one, else the last one (a run that
    failed and was retried with ``--retry-failed`` counts once). Order of first
    appearance is kept."""
    chosen: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        key = row.get("key")
        if key is None:
            continue
        previous = chosen.get(key)
        if previous is None or row.get("status") == "ok" or previous.get("status") != "ok":
            chosen[key] = row
    return list(chosen.values())


def csv_columns(rows: List[Dict[str, Any]]) -> List[str]:
    eval_names = sorted({name for row in rows for name in (row.get("evaluations") or {})})
    columns = list(BASE_COLUMNS) + list(SCORE_KEYS) + list(EVAL_EXTRA_KEYS)
    columns += [f"{name}.{key}" for name in eval_names for key in F1_KEYS]
    return columns


def flatten_row(row: Dict[str, Any]) -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for column in list(BASE_COLUMNS) + list(SCORE_KEYS) + list(EVAL_EXTRA_KEYS):
        value = row.get(column)
        flat[column] = json.dumps(value) if isinstance(value, (dict, list)) else value
    for name, scores in (row.get("evaluations") or {}).items():
        for key in F1_KEYS:
            flat[f"{name}.{key}"] = (scores or {}).get(key)
    return flat


def write_csv(rows: List[Dict[str, Any]], path: PathLike) -> Path:
    """The rows as a flat CSV (scalar columns; one F1 column per evaluation set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # runners sharing a results file write their own
    with tmp.open("w", newline="", encoding="utf8") as handle:
        writer = csv.DictWriter(handle, fieldnames=csv_columns(rows), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in flatten_row(row).items()})
    os.replace(tmp, path)
    return path


def csv_path_for(results_path: PathLike) -> Path:
    results_path = Path(results_path)
    return results_path.with_suffix(".csv")


def metric(row: Dict[str, Any], key: str, eval_name: Optional[str] = None) -> Optional[float]:
    """A scorer value of a row: the primary evaluation set's (top level) or a named one's."""
    if eval_name is None or eval_name == row.get("primary_eval"):
        value = row.get(key)
        if value is None and eval_name is not None:
            value = ((row.get("evaluations") or {}).get(eval_name) or {}).get(key)
    else:
        value = ((row.get("evaluations") or {}).get(eval_name) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
