"""The recipe fingerprint of a run, and which result rows are stale.

A run's **recipe** is how it is trained: its config file with the run's
overrides, resolved (variables interpolated), minus what only names data or
randomness -- the ``[paths]`` section, ``system.seed``, the corpus paths and the
training logger -- and with the settings that only batch inference hashed at fixed
values (:mod:`spacy_softprompt.config_identity`). Its fingerprint (:func:`recipe_fingerprint`) is recorded in
every result row (``recipe``). When a config's defaults change (a new learning
rate, a longer schedule), the fingerprint changes while the run's key (what is
compared: experiment, strategy, backbone, seed, k, prompt shape, data) stays.

* The runner skips a run only when the results hold a successful row with the
  same key **and** the same recipe; otherwise it trains again and the new row
  supersedes the old one (:func:`~.results.latest_rows` keeps the last).
* The report keeps a row only when its recipe is current
  (:func:`split_stale`): the recipe the plan computes now for its key when the
  report is written by the grid command, else the recipe of the most recently
  finished run of the same kind (training corpus, mode, strategy, backbone,
  prompt shape). Stale rows are listed, never mixed into a table.
"""
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..config_identity import with_inference_settings_fixed

PathLike = Union[str, Path]
IGNORED_PREFIXES = ("paths.", "training.logger.", "system.seed")
IGNORED_SUFFIXES = (".path",)  # corpora.*.path


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_items(config_path: PathLike, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """The resolved config of a run as flat ``section.key -> value`` items, minus paths, seed and
    logger, with the inference-only settings at fixed values (:mod:`spacy_softprompt.config_identity`)."""
    from spacy.util import load_config

    kept = {k: v for k, v in overrides.items() if not k.startswith(IGNORED_PREFIXES)}
    flat = _flatten(with_inference_settings_fixed(load_config(Path(config_path), overrides=kept, interpolate=True)))
    return {
        key: value
        for key, value in flat.items()
        if not key.startswith(IGNORED_PREFIXES) and not (key.startswith("corpora.") and key.endswith(IGNORED_SUFFIXES))
    }


def recipe_fingerprint(config_path: PathLike, overrides: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of :func:`recipe_items`."""
    blob = json.dumps(recipe_items(config_path, overrides), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf8")).hexdigest()[:16]


def recipe_group(row: Mapping[str, Any]) -> Tuple:
    """Runs of one kind, which must share one recipe in a report."""
    return tuple(
        str(row.get(k)) for k in ("train_corpus", "mode", "strategy", "backbone", "prompt_length", "prompt_depth", "hard_prompt")
    )


def split_stale(
    rows: List[Dict[str, Any]], current: Optional[Mapping[str, str]] = None
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(rows with the current recipe, stale rows). ``current``: key -> the recipe
    the grid plans now; a row whose key it does not know is stale too (the grid
    no longer plans that run: e.g. a strategy's prompt length moved, which changes
    the key). Without a plan (None) every row is judged against the newest
    successful run of its kind."""
    fresh, stale = [], []
    if current is not None:
        for row in rows:
            key = row.get("key")
            (fresh if key in current and row.get("recipe") == current[key] else stale).append(row)
        return fresh, stale
    newest: Dict[Tuple, Tuple[str, Any]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        group = recipe_group(row)
        stamp = str(row.get("finished_at") or "")
        if group not in newest or stamp >= newest[group][0]:
            newest[group] = (stamp, row.get("recipe"))
    for row in rows:
        expected = newest.get(recipe_group(row), ("", row.get("recipe")))[1]
        (fresh if row.get("recipe") == expected else stale).append(row)
    return fresh, stale
