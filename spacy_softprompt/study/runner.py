"""Run grids for the study: plan, train, evaluate, record; resumable.

``plan_runs`` expands (modes x strategies x backbones x seeds x k x prompt
length x depth) into :class:`RunSpec` objects; the config of a run is the one
the product trains: ``<configs>/tok_<strategy>_<device>.cfg`` in single-pass
mode (``token_ner`` concept head + relations; ``head="ner"``:
``<strategy>_<device>.cfg``, the span-based ``ner`` head) and
``<configs>/mrc_<strategy>_<device>.cfg`` in MRC mode (MRC mode has no
fine-tuning config: its no-prompt baseline is the single-pass ``finetune`` run,
which the plan uses instead). Every run carries a recipe fingerprint
(:mod:`.recipe`). ``run_grid`` executes the plan:

* a run whose ``key`` is already in the results file with the same ``recipe``
  is skipped (failed runs too, unless ``retry_failed``); one whose recorded
  recipe differs is trained again, and its new row supersedes the old one;
* a run whose ``signature`` (everything but the experiment's name) and recipe
  match a successful row of another experiment is not trained again: that row
  is copied under the new experiment with ``reused_from`` set (e.g. the
  few-shot ``k=all`` point is the strategy comparison's run);
* otherwise the run trains in a fresh Python process
  (``python -m spacy_softprompt.study.worker``; ``isolation="inline"`` runs it in
  this process): few-shot subset written (nested per seed, :mod:`.data`),
  spaCy's training loop on the config with the run's overrides, ``model-best``
  (else ``model-last``) loaded and evaluated with
  :func:`spacy_softprompt.evaluation.evaluate_pipeline` on every test set (and
  dev with ``eval_dev`` or when there is no test set; per-document counts
  included), parameters counted, peak
  memory (the worker's ``ru_maxrss``, and torch's CUDA peak on GPU) and wall
  time measured; the trained pipelines are deleted afterwards unless
  ``keep_models`` (the resolved ``config.cfg`` and ``meta.json`` stay in the run
  folder, with ``train.log`` and the dev-score curve ``curve.json``,
  :mod:`.curve`; the row gets ``dev_curve``, ``convergence`` and
  ``seconds_per_step``);
* a run is claimed before it trains (``claim.json`` in its run folder, created
  exclusively; :func:`claim_run`), so several runners can share one grid and one
  results file -- e.g. two runners with one thread each on a 2-core machine --
  without training a run twice; a runner skips runs claimed by a live process and
  takes over claims of processes that are gone;
* every run appends one JSON line -- ``status`` ``ok`` or ``failed`` with
  ``error_type`` and ``error`` -- and the CSV copy is rewritten. A failing run
  never stops the grid.

Overrides a run gets (recorded in its row): ``system.seed``; with ``max_steps``
(the grid's, or its strategy's entry in ``recipes``):
``training.max_steps``, the schedule's ``total_steps`` and a warmup of at most
10% of the steps, and ``training.eval_frequency = max_steps`` (unless given),
i.e. dev is scored after the first step and at the end; ``corpora.dev.limit``
(``dev_limit``: docs scored during training); ``prompt_length`` /
``prompt_depth`` of every prompted model block (``components.*.model``);
``paths.schema`` (MRC configs); ``hard_prompt`` of configs that have one; then
the user's ``--set KEY=VALUE`` pairs (applied to the configs that have the key).
"""
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import EXPERIMENTS, HEADS, MODES, STRATEGIES
from .curve import convergence, peak_rss_mb
from .recipe import recipe_fingerprint
from .results import (
    EVAL_EXTRA_KEYS,
    SCORE_KEYS,
    append_result,
    csv_path_for,
    latest_rows,
    read_results,
    write_csv,
)

PathLike = Union[str, Path]

DEFAULT_KS = (5, 10, 20, 50, None)  # None = all documents
DEFAULT_PROMPT_LENGTHS = (1, 5, 10, 20, 50, 100)
DEFAULT_DEPTHS = ("input", "deep")
PROMPT_SHAPE_STRATEGIES = ("soft", "soft-frozen")
ISOLATIONS = ("subprocess", "inline")
#: a recipe's eval_frequency that keeps the config's own value even when max_steps is overridden
#: (None there means: score once, at max_steps)
CONFIG_EVAL_FREQUENCY = "config"
#: what a grid's ``recipes`` entry may set
RECIPE_KEYS = ("max_steps", "eval_frequency", "patience")
#: early stopping whose patience is shorter than this share of the schedule ends runs
#: the convergence rule (:mod:`.curve`) flags by construction: see :func:`patience_warning`
MIN_PATIENCE_SHARE = 0.25
_PROMPT_KEY = re.compile(r"^components\.([^.]+)\.model\.prompt_length$")


class StudyError(ValueError):
    """A grid that cannot be planned (missing config, bad value)."""


# ------------------------------------------------------------------ parsing
def parse_list(value: Union[None, str, Sequence[Any]]) -> List[str]:
    """``"a,b, c"`` (or a list) -> ``["a", "b", "c"]``; empty items dropped."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [item.strip() for item in items if item.strip()]


def parse_ks(value: Union[None, str, Sequence[Any]]) -> List[Optional[int]]:
    """``"5,10,all"`` -> ``[5, 10, None]``."""
    out: List[Optional[int]] = []
    for item in parse_list(value):
        if item.lower() in ("all", "none", "full"):
            out.append(None)
        else:
            k = int(item)
            if k < 1:
                raise StudyError(f"k must be >= 1 or 'all', got {item}")
            out.append(k)
    return list(dict.fromkeys(out))


def parse_ints(value: Union[None, str, Sequence[Any]]) -> List[int]:
    return list(dict.fromkeys(int(v) for v in parse_list(value)))


def parse_named_path(value: str) -> Tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (name = file stem)."""
    if "=" in value:
        name, _, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise StudyError(f"expected NAME=PATH, got {value!r}")
        return name, path
    return Path(value).stem, value


def parse_override(value: str) -> Tuple[str, Any]:
    """``section.key=VALUE``; the value is read as JSON when it parses (numbers,
    true/false/null, quoted strings, lists), else kept as a string."""
    key, sep, raw = value.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key or "." not in key:
        raise StudyError(f"expected section.key=VALUE, got {value!r}")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw
    return key, parsed


def config_name(mode: str, strategy: str, device: str, head: str = "token_ner") -> str:
    """Single pass: ``tok_<strategy>_<device>.cfg`` (``token_ner`` head, the default)
    or ``<strategy>_<device>.cfg`` (``ner`` head); MRC: ``mrc_<strategy>_<device>.cfg``."""
    if mode not in MODES:
        raise StudyError(f"mode must be one of {MODES}, got {mode!r}")
    if head not in HEADS:
        raise StudyError(f"head must be one of {HEADS}, got {head!r}")
    if mode == "mrc":
        return f"mrc_{strategy}_{device}.cfg"
    return f"tok_{strategy}_{device}.cfg" if head == "token_ner" else f"{strategy}_{device}.cfg"


def slug(text: str, limit: int = 40) -> str:
    text = text.replace("package:", "")
    out = re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.")
    return (out[-limit:] if len(out) > limit else out) or "x"


def _flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _sha256(path: PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------ settings
@dataclass
class StudySettings:
    """What every run of one grid shares."""

    experiment: str
    train: str
    dev: str
    tests: List[Tuple[str, str]] = field(default_factory=list)
    train_name: Optional[str] = None
    dev_name: Optional[str] = None
    device: str = "cpu"
    gpu_id: int = -1
    max_steps: Optional[int] = None
    eval_frequency: Union[int, str, None] = None  # None: max_steps; CONFIG_EVAL_FREQUENCY: the config's
    dev_limit: int = 0
    eval_limit: int = 0
    eval_dev: bool = False
    schema: Optional[str] = None
    hard_prompt: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)
    configs_dir: str = "configs"
    threads: int = 0
    eval_batch_size: int = 8
    head: str = "token_ner"
    patience: Optional[int] = None  # early stopping's patience; None: the config's, 0: none
    # per-strategy training budget: strategy (or "mrc:<strategy>") -> {"max_steps": int | None,
    # "eval_frequency": int | "config" | None, "patience": int | None}; max_steps / patience None = the
    # config's own value; eval_frequency "config" = the config's own, None = max_steps; missing = the
    # settings' max_steps / eval_frequency / patience
    recipes: Dict[str, Dict[str, Union[int, str, None]]] = field(default_factory=dict)

    def _recipe(self, mode: str, strategy: str) -> Dict[str, Union[int, str, None]]:
        return self.recipes.get(f"{mode}:{strategy}", self.recipes.get(strategy)) or {}

    def budget(self, mode: str, strategy: str) -> Tuple[Optional[int], Union[int, str, None]]:
        """(max_steps, eval_frequency) of a strategy's runs; max_steps None = the config's;
        eval_frequency: see :func:`build_overrides`."""
        entry = self._recipe(mode, strategy)
        return entry.get("max_steps", self.max_steps), entry.get("eval_frequency", self.eval_frequency)

    def patience_for(self, mode: str, strategy: str) -> Optional[int]:
        """Early stopping's patience of a strategy's runs (None: the config's)."""
        return self._recipe(mode, strategy).get("patience", self.patience)

    def __post_init__(self):
        if self.experiment not in EXPERIMENTS:
            raise StudyError(f"experiment must be one of {EXPERIMENTS}, got {self.experiment!r}")
        if self.device not in ("cpu", "gpu"):
            raise StudyError(f"device must be cpu or gpu, got {self.device!r}")
        if self.device == "gpu" and self.gpu_id < 0:
            self.gpu_id = 0
        if self.device == "cpu":
            self.gpu_id = -1
        self.train, self.dev = str(self.train), str(self.dev)
        self.tests = [(str(n), str(p)) for n, p in self.tests]
        self.train_name = self.train_name or Path(self.train).stem
        self.dev_name = self.dev_name or Path(self.dev).stem
        names = [n for n, _ in self.tests]
        if len(set(names)) != len(names):
            raise StudyError(f"test set names must be unique, got {names}")
        if self.experiment == "transfer" and not self.tests:
            raise StudyError("the transfer experiment needs at least one --test NAME=PATH (the target source)")
        if self.max_steps is not None and self.max_steps < 1:
            raise StudyError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.head not in HEADS:
            raise StudyError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.patience is not None and self.patience < 0:
            raise StudyError(f"patience must be >= 0, got {self.patience}")
        for name, entry in self.recipes.items():
            unknown = set(entry) - set(RECIPE_KEYS)
            if isinstance(entry.get("patience"), int) and entry["patience"] < 0:
                raise StudyError(f"recipes: bad entry {name!r}: patience must be >= 0")
            if name.split(":")[-1] not in STRATEGIES or unknown:
                raise StudyError(f"recipes: bad entry {name!r}: {entry!r}")


# ------------------------------------------------------------------ runs
@dataclass
class RunSpec:
    """One training run: what the worker needs and what identifies the row."""

    key: str
    run_id: str
    signature: str
    experiment: str
    mode: str
    strategy: str
    device: str
    gpu_id: int
    backbone: str
    seed: int
    k: Optional[int]
    prompt_length: int
    prompt_depth: Optional[str]
    frozen: bool
    hard_prompt: bool
    config: str
    config_sha256: str
    recipe: str
    overrides: Dict[str, Any]
    train: str
    train_name: str
    dev: str
    dev_name: str
    tests: List[Tuple[str, str]]
    eval_limit: int
    eval_dev: bool
    eval_batch_size: int
    max_steps: Optional[int]
    threads: int = 0
    note: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunSpec":
        data = dict(data)
        data["tests"] = [tuple(t) for t in data.get("tests", [])]
        return cls(**data)

    @property
    def eval_sets(self) -> List[Tuple[str, str]]:
        """(name, path) of every set the run is scored on; the first is primary."""
        sets = list(self.tests)
        if self.eval_dev or not sets:
            sets.append((self.dev_name, self.dev))
        return sets

    @property
    def primary_eval(self) -> str:
        return self.eval_sets[0][0]

    def base_row(self) -> Dict[str, Any]:
        """The row fields known before the run."""
        return {
            "key": self.key,
            "run_id": self.run_id,
            "signature": self.signature,
            "experiment": self.experiment,
            "mode": self.mode,
            "strategy": self.strategy,
            "device": self.device,
            "backbone": self.backbone,
            "seed": self.seed,
            "k": self.k if self.k is not None else "all",
            "prompt_length": self.prompt_length,
            "prompt_depth": self.prompt_depth,
            "frozen": self.frozen,
            "hard_prompt": self.hard_prompt,
            "train_corpus": self.train_name,
            "dev_corpus": self.dev_name,
            "test_corpora": [name for name, _ in self.tests],
            "primary_eval": self.primary_eval,
            "config": self.config,
            "config_sha256": self.config_sha256,
            "recipe": self.recipe,
            "overrides": dict(self.overrides),
            "max_steps": self.max_steps,
            "note": self.note,
        }


class _ConfigCache:
    def __init__(self):
        self._cache: Dict[str, Dict[str, Any]] = {}

    def flat(self, path: Path) -> Dict[str, Any]:
        key = str(path)
        if key not in self._cache:
            from spacy.util import load_config

            self._cache[key] = _flatten(load_config(path, interpolate=False))
        return self._cache[key]


def _resolve_config(settings: StudySettings, mode: str, strategy: str) -> Tuple[str, Path, Optional[str]]:
    """(mode actually used, config path, note)."""
    configs = Path(settings.configs_dir)
    path = configs / config_name(mode, strategy, settings.device, settings.head)
    if path.is_file():
        return mode, path, None
    if mode == "mrc" and strategy == "finetune":
        single = configs / config_name("single", strategy, settings.device, settings.head)
        if single.is_file():
            return "single", single, "MRC mode has no fine-tuning config; the single-pass finetune baseline is used"
    raise StudyError(f"no config for mode={mode}, strategy={strategy}, device={settings.device}: {path} does not exist")


def build_overrides(
    flat: Dict[str, Any],
    settings: StudySettings,
    *,
    seed: int,
    prompt_length: Optional[int],
    prompt_depth: Optional[str],
    budget: Tuple[Optional[int], Optional[int]] = (None, None),
    patience: Optional[int] = None,
) -> Tuple[Dict[str, Any], List[str]]:
    """The run's config overrides (without paths.train/dev/backbone) and the user
    override keys this config does not have (ignored for it). ``budget``:
    (max_steps, eval_frequency); max_steps None = the config's; eval_frequency None = max_steps
    when that is set (one dev score, at the end), ``CONFIG_EVAL_FREQUENCY`` = the config's own.
    ``patience``: ``training.patience`` (None: the config's; 0: no early stopping)."""
    out: Dict[str, Any] = {"system.seed": seed}
    steps, eval_frequency = budget
    if patience is not None:
        out["training.patience"] = int(patience)
    if steps is not None:
        out["training.max_steps"] = steps
        if "training.optimizer.learn_rate.total_steps" in flat:
            out["training.optimizer.learn_rate.total_steps"] = steps
        warmup = flat.get("training.optimizer.learn_rate.warmup_steps")
        if isinstance(warmup, int):
            out["training.optimizer.learn_rate.warmup_steps"] = min(warmup, max(1, steps // 10))
    frequency = None if eval_frequency == CONFIG_EVAL_FREQUENCY else eval_frequency or steps
    if frequency is not None:
        out["training.eval_frequency"] = int(frequency)
    if settings.dev_limit and "corpora.dev.limit" in flat:
        out["corpora.dev.limit"] = int(settings.dev_limit)
    blocks = [m.group(1) for m in map(_PROMPT_KEY.match, flat) if m]
    for block in blocks:
        if prompt_length is not None:
            out[f"components.{block}.model.prompt_length"] = int(prompt_length)
        if prompt_depth is not None:
            out[f"components.{block}.model.prompt_depth"] = prompt_depth
        hard_key = f"components.{block}.model.hard_prompt"
        if settings.hard_prompt and flat.get(hard_key):
            out[hard_key] = settings.hard_prompt
    if settings.schema and "paths.schema" in flat:
        out["paths.schema"] = settings.schema
    missing = []
    for key, value in settings.overrides.items():
        if _missing_for(flat, key):
            missing.append(key)
        else:
            out[key] = value
    # drop no-op overrides so that identical runs get identical signatures
    out = {k: v for k, v in out.items() if not (k in flat and flat[k] == v and type(flat[k]) is type(v))}
    out["system.seed"] = seed  # always explicit
    return dict(sorted(out.items())), missing


def _missing_for(flat: Dict[str, Any], key: str) -> List[str]:
    """``[key]`` when the config has no such key (or section), else ``[]``."""
    return [] if key in flat or any(k.startswith(key + ".") for k in flat) else [key]


def effective_values(flat: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """prompt_length / prompt_depth / frozen / hard prompt of the run's encoder
    (the first prompted model block of the pipeline)."""
    merged = dict(flat)
    merged.update(overrides)
    blocks = [m.group(1) for m in map(_PROMPT_KEY.match, merged) if m]
    pipeline = merged.get("nlp.pipeline") or []
    blocks.sort(key=lambda b: pipeline.index(b) if b in pipeline else len(pipeline))
    if not blocks:
        return {"prompt_length": 0, "prompt_depth": None, "frozen": False, "hard_prompt": False}
    block = blocks[0]
    length = int(merged.get(f"components.{block}.model.prompt_length") or 0)
    depth = merged.get(f"components.{block}.model.prompt_depth")
    hard_text = merged.get(f"components.{block}.model.hard_prompt")
    hard = bool(hard_text) or merged.get(f"components.{block}.query_mode") == "hard"
    return {
        "prompt_length": length,
        "prompt_depth": depth if length > 0 else None,
        "frozen": bool(merged.get(f"components.{block}.model.freeze_backbone", False)),
        "hard_prompt": hard,
    }


def _resolved_steps(flat: Dict[str, Any], overrides: Dict[str, Any]) -> Optional[int]:
    """training.max_steps of the run (override, else the config's)."""
    value = overrides.get("training.max_steps", flat.get("training.max_steps"))
    return int(value) if isinstance(value, int) else None


def _signature(data: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf8")).hexdigest()


def plan_runs(
    settings: StudySettings,
    *,
    strategies: Sequence[str],
    modes: Sequence[str] = ("single",),
    backbones: Sequence[Optional[str]] = (None,),
    seeds: Sequence[int] = (0,),
    ks: Sequence[Optional[int]] = (None,),
    prompt_lengths: Sequence[Optional[int]] = (None,),
    depths: Sequence[Optional[str]] = (None,),
    warn: Callable[[str], None] = lambda message: None,
) -> List[RunSpec]:
    """Expand the grid into runs (deduplicated by key, in a stable order:
    mode, backbone, strategy, prompt shape, k, seed)."""
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise StudyError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    for depth in depths:
        if depth not in (None, "input", "deep"):
            raise StudyError(f"prompt depth must be input or deep, got {depth!r}")
    for length in prompt_lengths:
        if length is not None and length < 0:
            raise StudyError(f"prompt length must be >= 0, got {length}")
    if not strategies or not seeds:
        raise StudyError("a grid needs at least one strategy and one seed")
    cache = _ConfigCache()
    specs: Dict[str, RunSpec] = {}
    missing_overrides: Dict[str, int] = {}
    patience_notes: Dict[str, None] = {}  # ordered, each once
    for mode in modes:
        for backbone_arg in backbones or (None,):
            for strategy in strategies:
                used_mode, config_path, note = _resolve_config(settings, mode, strategy)
                flat = cache.flat(config_path)
                backbone = backbone_arg or flat.get("paths.backbone")
                if not isinstance(backbone, str) or not backbone:
                    raise StudyError(f"{config_path}: no paths.backbone; pass --backbones")
                for length in prompt_lengths or (None,):
                    for depth in depths or (None,):
                        for k in ks or (None,):
                            for seed in seeds:
                                overrides, missing = build_overrides(
                                    flat,
                                    settings,
                                    seed=int(seed),
                                    prompt_length=length,
                                    prompt_depth=depth,
                                    budget=settings.budget(used_mode, strategy),
                                    patience=settings.patience_for(used_mode, strategy),
                                )
                                message = patience_warning(flat, overrides)
                                if message:
                                    patience_notes.setdefault(f"{config_path.name}: {message}", None)
                                for key in missing:
                                    missing_overrides[key] = missing_overrides.get(key, 0) + 1
                                spec = _make_spec(
                                    settings, used_mode, strategy, config_path, flat, overrides, backbone, int(seed), k, note
                                )
                                specs.setdefault(spec.key, spec)
    for key in missing_overrides:
        if all(key in _missing_for(cache.flat(Path(s.config)), key) for s in specs.values()):
            raise StudyError(f"override {key!r} matches no key of the planned configs")
        warn(f"override {key!r} ignored for the configs that do not have it")
    for message in patience_notes:
        warn(message)
    return list(specs.values())


def patience_warning(flat: Dict[str, Any], overrides: Dict[str, Any]) -> Optional[str]:
    """Why a run's early stopping and the convergence rule disagree, or None.

    Early stopping ends a run ``patience`` steps after its best dev score; the rule
    (:func:`.curve.convergence`) flags a run whose best lies in the last quarter of the
    steps it ran, i.e. every run stopped early whose best came after step 3 x patience,
    unless its score stayed within 0.5 points. A patience of at least a quarter of
    max_steps leaves no such run (the best of a run stopped early is at or before its
    three-quarter mark)."""
    merged = {**flat, **overrides}
    patience, steps = merged.get("training.patience"), _resolved_steps(flat, overrides)
    if not isinstance(patience, int) or patience <= 0 or not steps or patience >= MIN_PATIENCE_SHARE * steps:
        return None
    return (
        f"early stopping's patience ({patience}) is under a quarter of max_steps ({steps}): a run it stops whose "
        f"best dev score came after step {3 * patience} is flagged not converged unless the score stayed within "
        f"0.5 points; set the recipe's patience to {-(-steps // 4)} or more (or 0: no early stopping)"
    )


def _make_spec(
    settings: StudySettings,
    mode: str,
    strategy: str,
    config_path: Path,
    flat: Dict[str, Any],
    overrides: Dict[str, Any],
    backbone: str,
    seed: int,
    k: Optional[int],
    note: Optional[str],
) -> RunSpec:
    effective = effective_values(flat, overrides)
    # identity: what is compared (the recipe -- how it is trained -- is fingerprinted apart)
    signature_data = {
        "mode": mode,
        "strategy": strategy,
        "device": settings.device,
        "backbone": backbone,
        "seed": seed,
        "k": k,
        "prompt_length": effective["prompt_length"],
        "prompt_depth": effective["prompt_depth"],
        "hard_prompt": settings.hard_prompt if effective["hard_prompt"] else None,
        "config": config_path.name,
        "extra": {key: overrides[key] for key in sorted(settings.overrides) if key in overrides},
        "train": settings.train,
        "dev": settings.dev,
        "tests": settings.tests,
        "eval_dev": settings.eval_dev,
        "eval_limit": settings.eval_limit,
    }
    signature = _signature(signature_data)
    shape = f"P{effective['prompt_length']}" + (f"-{effective['prompt_depth']}" if effective["prompt_depth"] else "")
    run_id = "-".join(
        [mode, strategy, slug(backbone), f"s{seed}", f"k{k if k is not None else 'all'}", shape, signature[:10]]
    )
    return RunSpec(
        key=f"{settings.experiment}/{run_id}",
        run_id=run_id,
        signature=signature,
        experiment=settings.experiment,
        mode=mode,
        strategy=strategy,
        device=settings.device,
        gpu_id=settings.gpu_id,
        backbone=backbone,
        seed=seed,
        k=k,
        prompt_length=effective["prompt_length"],
        prompt_depth=effective["prompt_depth"],
        frozen=effective["frozen"],
        hard_prompt=effective["hard_prompt"],
        config=str(config_path),
        config_sha256=_sha256(config_path),
        recipe=recipe_fingerprint(config_path, overrides),
        overrides=overrides,
        train=settings.train,
        train_name=settings.train_name,
        dev=settings.dev,
        dev_name=settings.dev_name,
        tests=list(settings.tests),
        eval_limit=settings.eval_limit,
        eval_dev=settings.eval_dev,
        eval_batch_size=settings.eval_batch_size,
        max_steps=_resolved_steps(flat, overrides),
        threads=settings.threads,
        note=note,
    )


# ------------------------------------------------------------------ worker side
def _peak_gpu_mb() -> Optional[float]:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except Exception:  # pragma: no cover
        return None
    return None


def _subset_path(work_dir: Path, spec: RunSpec) -> Path:
    digest = hashlib.sha256(str(Path(spec.train).resolve()).encode("utf8")).hexdigest()[:8]
    return work_dir / "subsets" / f"{slug(spec.train_name)}-{digest}-k{spec.k}-seed{spec.seed}.spacy"


def prepare_train_data(spec: RunSpec, work_dir: Path) -> Tuple[str, int, int]:
    """(path to train on, documents, tokens): the few-shot subset for ``k``."""
    from .data import corpus_size, subsample_docbin

    if spec.k is None:
        n_docs, n_words = corpus_size(spec.train)
        return spec.train, n_docs, n_words
    path = _subset_path(work_dir, spec)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.spacy")
    n_docs, n_words = subsample_docbin(spec.train, tmp, spec.k, spec.seed)
    os.replace(tmp, path)
    return str(path), n_docs, n_words


def execute_run(spec: RunSpec, run_dir: PathLike, work_dir: PathLike, *, keep_models: bool = False) -> Dict[str, Any]:
    """Train and evaluate one run in this process; never raises for a failing run:
    returns ``{"status": "failed", "error_type", "error", ...}`` instead."""
    run_dir, work_dir = Path(run_dir), Path(work_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"status": "failed"}
    start = time.perf_counter()
    try:
        result.update(_train_and_evaluate(spec, run_dir, work_dir))
        result["status"] = "ok"
    except BaseException as error:  # noqa: BLE001 - a run's failure is data
        if isinstance(error, KeyboardInterrupt):
            raise
        result["error_type"] = type(error).__name__
        result["error"] = str(error)[:2000]
        result["traceback"] = traceback.format_exc()[-4000:]
    finally:
        if not keep_models:
            for name in ("model-best", "model-last"):
                shutil.rmtree(run_dir / name, ignore_errors=True)
    result["worker_seconds"] = round(time.perf_counter() - start, 2)
    # a resumed run: the earlier sittings' peaks are in its curve's points
    earlier_peaks = [float(p["peak_mb"]) for p in result.get("dev_curve") or () if p.get("peak_mb") is not None]
    peak = peak_rss_mb()
    result["peak_mb"] = max(earlier_peaks + ([peak] if peak is not None else []), default=None)
    result["peak_gpu_mb"] = _peak_gpu_mb()
    return result


def _train_and_evaluate(spec: RunSpec, run_dir: Path, work_dir: Path) -> Dict[str, Any]:
    from ..backbones import resolve_backbone

    backbone_path = resolve_backbone(spec.backbone)  # fails fast, before the heavy imports
    if spec.threads and spec.threads > 0:
        import torch

        torch.set_num_threads(spec.threads)
    import spacy
    from spacy import util
    from spacy.training.initialize import init_nlp

    from ..evaluation import evaluate_pipeline, load_gold_docs
    from ..training_loop import train_pipeline
    from .curve import read_curve, record_curve
    from .params import count_parameters

    out: Dict[str, Any] = {}
    train_path, out["n_train_docs"], out["n_train_words"] = prepare_train_data(spec, work_dir)
    overrides = dict(spec.overrides)
    overrides.update({"paths.train": train_path, "paths.dev": spec.dev, "paths.backbone": backbone_path})
    if spec.gpu_id >= 0:
        spacy.require_gpu(spec.gpu_id)
    start = time.perf_counter()
    config = util.load_config(spec.config, overrides=overrides, interpolate=False)
    nlp = init_nlp(config, use_gpu=spec.gpu_id)
    curve_path = run_dir / "curve.json"
    resumed = _checkpoint_progress(run_dir, nlp)
    if resumed is None:
        curve_path.unlink(missing_ok=True)
    else:  # a runner that was stopped (a session's end, a kill) left this run's checkpoint
        out["resumed_after_step"] = int(resumed["step"])
    record_curve(nlp, curve_path)
    loop_start = time.perf_counter()
    train_pipeline(nlp, run_dir, use_gpu=spec.gpu_id, stdout=sys.stdout, stderr=sys.stderr, resume=resumed is not None)
    earlier = float(resumed["seconds"]) if resumed is not None else 0.0  # loop seconds before the checkpoint
    if resumed is not None:
        out["seconds_before_resume"] = round(earlier, 2)
    out["train_seconds"] = round(time.perf_counter() - start + earlier, 2)
    out["dev_curve"] = read_curve(curve_path)
    last_step = max((int(p["step"]) for p in out["dev_curve"]), default=0)
    if last_step > 0:  # the loop's time per step, dev evaluations included
        out["seconds_per_step"] = round((time.perf_counter() - loop_start + earlier) / last_step, 3)
    del nlp
    model_dir = run_dir / "model-best"
    if not (model_dir / "meta.json").is_file():
        model_dir = run_dir / "model-last"
    out["model"] = model_dir.name
    for name in ("config.cfg", "meta.json"):
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, run_dir / name)
    nlp = spacy.load(model_dir)
    out.update(count_parameters(nlp))
    start = time.perf_counter()
    evaluations: Dict[str, Dict[str, Any]] = {}
    by_path: Dict[str, Dict[str, Any]] = {}
    for name, path in spec.eval_sets:
        resolved = str(Path(path).resolve())
        if resolved not in by_path:
            docs = load_gold_docs(Path(path), nlp)
            if spec.eval_limit and spec.eval_limit > 0:
                docs = docs[: spec.eval_limit]
            by_path[resolved] = evaluate_pipeline(nlp, docs, batch_size=spec.eval_batch_size)
        evaluations[name] = by_path[resolved]
    out["eval_seconds"] = round(time.perf_counter() - start, 2)
    out["evaluations"] = evaluations
    return out


def _checkpoint_progress(run_dir: Path, nlp) -> Optional[Dict[str, Any]]:
    """The loop position of ``run_dir``'s checkpoint when it was written by this run's
    config (the run goes on from it), else ``None``; a checkpoint of another recipe is
    removed (the run starts again)."""
    from ..checkpoint import CheckpointError, config_fingerprint, read_checkpoint, remove_checkpoint

    try:
        state = read_checkpoint(run_dir, config_fingerprint(nlp.config))
    except CheckpointError:
        remove_checkpoint(run_dir)
        return None
    return None if state is None else state["progress"]


# ------------------------------------------------------------------ runner side
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> Dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for package in ("spacy", "spacy-transformers", "torch", "transformers", "spacy-softprompt"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _run_subprocess(
    spec: RunSpec, run_dir: Path, work_dir: Path, *, keep_models: bool, timeout: Optional[float]
) -> Dict[str, Any]:
    spec_path, result_path = run_dir / "spec.json", run_dir / "result.json"
    spec_path.write_text(json.dumps(spec.to_dict(), indent=2), encoding="utf8")
    if result_path.exists():
        result_path.unlink()
    command = [sys.executable, "-m", "spacy_softprompt.study.worker", str(spec_path), str(result_path), str(work_dir)]
    if keep_models:
        command.append("--keep-models")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with (run_dir / "train.log").open("w", encoding="utf8") as log:
        try:
            process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            if not keep_models:
                for name in ("model-best", "model-last"):
                    shutil.rmtree(run_dir / name, ignore_errors=True)
            return {"status": "failed", "error_type": "Timeout", "error": f"run exceeded {timeout} s"}
    if result_path.is_file():
        return json.loads(result_path.read_text(encoding="utf8"))
    if returncode < 0:
        error_type, error = "Killed", f"worker killed by signal {-returncode} (out of memory?)"
    else:
        error_type, error = "WorkerError", f"worker exited with code {returncode} without a result"
    tail = (run_dir / "train.log").read_text(encoding="utf8", errors="replace")[-2000:]
    return {"status": "failed", "error_type": error_type, "error": error, "traceback": tail}


def _run_inline(spec: RunSpec, run_dir: Path, work_dir: Path, *, keep_models: bool) -> Dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2), encoding="utf8")
    with (run_dir / "train.log").open("w", encoding="utf8") as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            result = execute_run(spec, run_dir, work_dir, keep_models=keep_models)
    result["peak_scope"] = "process"  # ru_maxrss of this (shared) process, not of the run alone
    return result


def make_row(spec: RunSpec, result: Dict[str, Any], wall_seconds: float) -> Dict[str, Any]:
    row = spec.base_row()
    for key in (
        "status",
        "error_type",
        "error",
        "n_train_docs",
        "n_train_words",
        "trainable_params",
        "total_params",
        "torch_params",
        "thinc_params",
        "train_seconds",
        "eval_seconds",
        "peak_mb",
        "peak_gpu_mb",
        "peak_scope",
        "model",
        "dev_curve",
        "seconds_per_step",
        "resumed_after_step",
        "seconds_before_resume",
    ):
        if key in result:
            row[key] = result[key]
    if "dev_curve" in row:
        row["convergence"] = convergence(row["dev_curve"])
    row.setdefault("peak_scope", "run")
    if row.get("trainable_params") is not None and row.get("total_params"):
        row["trainable_share"] = round(row["trainable_params"] / row["total_params"], 6)
    # the whole run's time: this sitting plus the training loop of the sittings before a resume
    row["wall_seconds"] = round(wall_seconds + float(result.get("seconds_before_resume") or 0.0), 2)
    evaluations = result.get("evaluations") or {}
    if evaluations:
        row["evaluations"] = evaluations
        primary = evaluations.get(spec.primary_eval) or {}
        for key in SCORE_KEYS + EVAL_EXTRA_KEYS:
            row[key] = primary.get(key)
    row["finished_at"] = _now()
    row["versions"] = _versions()
    return row


@dataclass
class GridSummary:
    planned: int = 0
    skipped: int = 0
    reused: int = 0
    ran: int = 0
    failed: int = 0
    stale: int = 0
    busy: int = 0
    rows: List[Dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.planned} runs planned: {self.ran} ran ({self.failed} failed; {self.stale} of them again because "
            f"their recipe changed), {self.reused} reused from other experiments, {self.skipped} already in the results"
            + (f", {self.busy} left to the runners that hold them" if self.busy else "")
        )


def run_grid(
    specs: Iterable[RunSpec],
    results_path: PathLike,
    work_dir: PathLike,
    *,
    isolation: str = "subprocess",
    keep_models: bool = False,
    retry_failed: bool = False,
    reuse: bool = True,
    timeout: Optional[float] = None,
    log: Callable[[str], None] = print,
) -> GridSummary:
    """Execute the runs not yet in ``results_path`` (see the module docstring)."""
    if isolation not in ISOLATIONS:
        raise StudyError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    results_path, work_dir = Path(results_path), Path(work_dir)
    specs = list(specs)
    summary = GridSummary(planned=len(specs))
    for number, spec in enumerate(specs, 1):
        run_dir = work_dir / spec.experiment / spec.run_id
        if _already_recorded(spec, results_path, retry_failed):
            summary.skipped += 1
            log(f"[{number}/{len(specs)}] skip {spec.key} (already in {results_path.name})")
            continue
        holder = claim_run(run_dir)
        if holder is not None:
            summary.busy += 1
            log(f"[{number}/{len(specs)}] skip {spec.key} (running in {holder}; claim: {run_dir / CLAIM_FILE})")
            continue
        try:
            # re-read under the claim: another runner may have finished it since
            if _already_recorded(spec, results_path, retry_failed):
                summary.skipped += 1
                log(f"[{number}/{len(specs)}] skip {spec.key} (already in {results_path.name})")
                continue
            _execute(spec, number, len(specs), run_dir, results_path, work_dir, summary, isolation, keep_models, reuse, timeout, log)
        finally:
            release_run(run_dir)
    return summary


def _already_recorded(spec: "RunSpec", results_path: Path, retry_failed: bool) -> bool:
    """Whether ``spec`` has a row with its current recipe that needs no rerun."""
    all_rows = read_results(results_path)  # re-read: another runner may share the file
    current = latest_rows(r for r in all_rows if r.get("key") == spec.key and r.get("recipe") == spec.recipe)
    previous = next(iter(current), None)
    return previous is not None and (previous.get("status") == "ok" or not retry_failed)


def _execute(
    spec: "RunSpec",
    number: int,
    planned: int,
    run_dir: Path,
    results_path: Path,
    work_dir: Path,
    summary: GridSummary,
    isolation: str,
    keep_models: bool,
    reuse: bool,
    timeout: Optional[float],
    log: Callable[[str], None],
) -> None:
    """Reuse an identical run's row, or train and record ``spec`` (the caller holds its claim)."""
    all_rows = read_results(results_path)
    rows = latest_rows(all_rows)
    own = [r for r in all_rows if r.get("key") == spec.key]
    if own and not any(r.get("recipe") == spec.recipe for r in own):
        summary.stale += 1
        log(f"[{number}/{planned}] recipe changed since {spec.key} ran (now {spec.recipe}): run again")
    donor = None
    if reuse:
        donor = next(
            (
                r
                for r in rows
                if r.get("signature") == spec.signature and r.get("recipe") == spec.recipe and r.get("status") == "ok"
            ),
            None,
        )
    if donor is not None:
        row = dict(donor)
        row.update(key=spec.key, run_id=spec.run_id, experiment=spec.experiment, reused_from=donor["key"], finished_at=_now())
        append_result(results_path, row)
        write_csv(latest_rows(read_results(results_path)), csv_path_for(results_path))
        summary.reused += 1
        summary.rows.append(row)
        log(f"[{number}/{planned}] reuse {spec.key} <- {donor['key']}")
        return
    log(f"[{number}/{planned}] run {spec.key} (log: {run_dir / 'train.log'})")
    start = time.perf_counter()
    if isolation == "subprocess":
        result = _run_subprocess(spec, run_dir, work_dir, keep_models=keep_models, timeout=timeout)
    else:
        result = _run_inline(spec, run_dir, work_dir, keep_models=keep_models)
    row = make_row(spec, result, time.perf_counter() - start)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf8")
    append_result(results_path, row)
    write_csv(latest_rows(read_results(results_path)), csv_path_for(results_path))
    summary.ran += 1
    summary.rows.append(row)
    if row["status"] == "ok":
        log(
            f"    ok in {row['wall_seconds']:.0f} s: ents_strict_f={_fmt(row.get('ents_strict_f'))} "
            f"rels_strict_f={_fmt(row.get('rels_strict_f'))} trainable={row.get('trainable_params')} "
            f"peak={row.get('peak_mb')} MB"
        )
    else:
        summary.failed += 1
        log(f"    FAILED ({row.get('error_type')}): {str(row.get('error'))[:300]}")


# ------------------------------------------------------------------ run claims
CLAIM_FILE = "claim.json"


def claim_run(run_dir: PathLike) -> Optional[str]:
    """Take ``run_dir``'s run for this process, so that several ``study run`` processes
    can share one grid and one results file: ``None`` when the claim is ours, else a
    description of the process that holds it. A claim left by a process of this host
    that no longer exists (killed runner, rebooted machine) is taken over; one from
    another host is respected until its file is deleted."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now(), "process": _process_identity(os.getpid())}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_claim(path)
            if holder is None and _age_seconds(path) < 60:
                return "another process (its claim is being written)"
            if holder is not None and not _claim_is_stale(holder):
                return f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
            path.unlink(missing_ok=True)  # stale, or unreadable for a minute: take it over
            continue
        with os.fdopen(fd, "w", encoding="utf8") as handle:
            json.dump(mine, handle)
        return None
    return f"another process (claim file {path} keeps reappearing)"


def claim_holder(run_dir: PathLike) -> Optional[str]:
    """Who holds ``run_dir``'s run now (a live claim), without taking it; else ``None``."""
    holder = _read_claim(Path(run_dir) / CLAIM_FILE)
    if holder is None or _claim_is_stale(holder):
        return None
    return f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"


def release_run(run_dir: PathLike) -> None:
    """Drop this process's claim on ``run_dir`` (a claim of another process stays)."""
    path = Path(run_dir) / CLAIM_FILE
    holder = _read_claim(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def _read_claim(path: Path) -> Optional[Dict[str, Any]]:
    try:
        holder = json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _process_identity(pid: int) -> Optional[str]:
    """``boot id:start time`` of a process (Linux ``/proc``), which a reused pid does
    not share with the process that held it before; ``None`` where there is no ``/proc``."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        stat = Path(f"/proc/{int(pid)}/stat").read_text(encoding="ascii", errors="replace")
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"  # field 22: start time after boot
    except (OSError, ValueError, IndexError):
        return None


def _claim_is_stale(holder: Dict[str, Any]) -> bool:
    """A claim of this host whose process is gone: no such pid, or the pid now names
    another process (a reboot or a new session reused it)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder.get("pid"))
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, TypeError, ValueError):
        return False
    recorded = holder.get("process")
    return recorded is not None and _process_identity(pid) not in (None, recorded)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"
