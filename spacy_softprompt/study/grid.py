"""A whole study in one file: ``python -m spacy_softprompt study run --grid GRID.yml``.

The grid file (YAML) names the results file, the report folder, the shared
settings, the datasets and the experiments; :func:`run_study` plans every
experiment, runs them in order (each resumable: finished runs with the current
recipe are skipped, identical runs are reused across experiments) and writes
the report, in which only rows with the recipe the plan computes now are used.
:func:`estimate` says what the remaining runs cost, from measured seconds per
step (``seconds_per_step`` of the file). Paths in the file are relative to the
working directory (the project root).

Grids that write one results file and one report (``shares_report_with``: the
other grid files) plan each other's runs when the report is written, so a row
of the other grid's experiments with an outdated recipe is left out as stale
whichever grid writes the report.

Recipe budgets (``recipes``): per strategy (or ``mrc:<strategy>``) ``max_steps``
and ``eval_frequency`` as a number, ``config`` (the config file's own value) or
``project`` (``vars.max_steps`` / ``vars.eval_frequency`` of ``project.yml``,
the main job's budget), so the study follows the product's recipe when it moves;
``patience`` (early stopping) as a number (0: none) or ``config``. Planning warns
when a patience under a quarter of max_steps would end runs that the convergence
rule then flags (:func:`~.runner.patience_warning`).
A dataset may carry its own ``recipes`` (same form): its experiments take them
over the grid's, key by key (a larger training set wants a longer schedule).
"""
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .runner import (
    CONFIG_EVAL_FREQUENCY,
    DEFAULT_DEPTHS,
    DEFAULT_PROMPT_LENGTHS,
    RECIPE_KEYS,
    RunSpec,
    StudyError,
    StudySettings,
    parse_ints,
    parse_ks,
    parse_list,
    plan_runs,
    run_grid,
)

PathLike = Union[str, Path]
BUDGET_KEYS = RECIPE_KEYS
SETTING_KEYS = ("device", "gpu_id", "head", "dev_limit", "eval_limit", "eval_dev", "configs_dir", "threads", "overrides")
DEFAULT_OVERHEAD_S = 60.0  # per run: start, initialisation, final evaluation


@dataclass
class Grid:
    path: Path
    results: Path
    report: Path
    work_dir: Path
    experiments: List[Tuple[StudySettings, Dict[str, Any]]]  # (settings, plan_runs keyword arguments)
    seconds_per_step: Dict[str, float] = field(default_factory=dict)
    step_factors: Dict[str, float] = field(default_factory=dict)  # training file -> cost of its steps vs the reference
    overheads: Dict[str, float] = field(default_factory=dict)  # training file -> seconds per run beside the steps
    overhead_s: float = DEFAULT_OVERHEAD_S
    timeout: Optional[float] = None
    shares_report_with: List[Path] = field(default_factory=list)  # grid files writing the same results and report

    def plan(self, warn: Callable[[str], None] = lambda m: None) -> List[RunSpec]:
        specs: List[RunSpec] = []
        for settings, kwargs in self.experiments:
            specs += plan_runs(settings, warn=warn, **kwargs)
        return specs

    def current_recipes(self, warn: Callable[[str], None] = lambda m: None) -> Dict[str, str]:
        """key -> recipe of every run this grid and the grids it shares its report with plan now
        (this grid's own plan wins a key both plan)."""
        current = self.companion_recipes(warn)
        current.update({spec.key: spec.recipe for spec in self.plan(warn)})
        return current

    def companion_recipes(self, warn: Callable[[str], None] = lambda m: None) -> Dict[str, str]:
        """key -> recipe of every run the grids this one shares its report with plan now."""
        current: Dict[str, str] = {}
        for other in self.shares_report_with:
            companion = load_grid(other)
            if (companion.results, companion.report) != (self.results, self.report):
                raise StudyError(
                    f"{self.path}: shares_report_with {other}, which writes {companion.results} / {companion.report}, "
                    f"not {self.results} / {self.report}"
                )
            current.update({spec.key: spec.recipe for spec in companion.plan(warn)})
        return current

    @property
    def experiment_names(self) -> List[str]:
        return list(dict.fromkeys(settings.experiment for settings, _ in self.experiments))

    def only(self, names: Optional[Sequence[str]]) -> "Grid":
        """The same grid with only the experiments ``names`` (all when None)."""
        if not names:
            return self
        unknown = sorted(set(names) - set(self.experiment_names))
        if unknown:
            raise StudyError(f"{self.path}: no experiment {', '.join(unknown)} (it has {', '.join(self.experiment_names)})")
        return replace(self, experiments=[(s, k) for s, k in self.experiments if s.experiment in names])


def _budget_value(value: Any, name: str, project_vars: Dict[str, Any]) -> Union[int, str, None]:
    """One budget key's value: a number, ``project``'s, or the config's own (``config`` or missing:
    max_steps None; eval_frequency ``CONFIG_EVAL_FREQUENCY``, so a recipe that sets only max_steps
    keeps the config's scoring interval)."""
    if value == "config" or value is None:
        return CONFIG_EVAL_FREQUENCY if name == "eval_frequency" else None
    if value == "project" and name == "patience":
        raise StudyError("recipes: patience is a number or 'config' (project.yml has no patience)")
    if value == "project":
        if name not in project_vars:
            raise StudyError(f"project.yml has no vars.{name}")
        return int(project_vars[name])
    return int(value)


def read_recipes(raw: Dict[str, Any], project_vars: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(default budget, per-strategy budgets) of a grid's ``recipes`` block."""
    default = {k: _budget_value((raw.get("default") or {}).get(k, "config"), k, project_vars) for k in BUDGET_KEYS}
    per_strategy = {
        name: {k: _budget_value(entry.get(k, "config"), k, project_vars) for k in BUDGET_KEYS}
        for name, entry in raw.items()
        if name != "default"
    }
    return default, per_strategy


def merged_recipes(grid_recipes: Optional[Dict[str, Any]], data_recipes: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The grid's ``recipes`` block with a dataset's own ``recipes`` over it, key by key
    (``{"default": {"max_steps": 3200}}`` keeps the grid's default ``eval_frequency``); a
    strategy the grid has no entry for starts from the grid's ``default``."""
    merged = {name: dict(entry or {}) for name, entry in (grid_recipes or {}).items()}
    for name, entry in (data_recipes or {}).items():
        if not isinstance(entry, dict) or set(entry) - set(BUDGET_KEYS):
            raise StudyError(f"recipes: bad entry {name!r}: {entry!r} (keys: {', '.join(BUDGET_KEYS)})")
        merged.setdefault(name, dict(merged.get("default", {}))).update(entry)
    return merged


def load_grid(path: PathLike, project: PathLike = "project.yml", *, threads: Optional[int] = None) -> Grid:
    """The grid file at ``path``; ``threads`` (torch threads per run) overrides the
    file's ``threads``: it changes how fast a run goes, not its recipe."""
    import srsly

    path = Path(path)
    raw = srsly.read_yaml(path)
    project_vars = srsly.read_yaml(project).get("vars", {}) if Path(project).is_file() else {}
    shared = {k: raw[k] for k in SETTING_KEYS if k in raw}
    if threads is not None:
        shared["threads"] = int(threads)
    datasets = raw.get("data") or {}
    experiments = []
    for entry in raw.get("experiments") or []:
        entry = dict(entry)
        data = datasets.get(entry.pop("data", None))
        if data is None:
            raise StudyError(f"{path}: every experiment names one of the datasets {sorted(datasets)}")
        experiment = entry.pop("experiment")
        default, per_strategy = read_recipes(merged_recipes(raw.get("recipes"), data.get("recipes")), project_vars)
        settings = StudySettings(
            experiment=experiment,
            train=data["train"],
            dev=data["dev"],
            tests=[(str(n), str(p)) for n, p in (data.get("tests") or {}).items()],
            train_name=data.get("name"),
            schema=data.get("schema"),
            hard_prompt=data.get("hard_prompt"),
            max_steps=default["max_steps"],
            eval_frequency=default["eval_frequency"],
            patience=default["patience"],
            recipes=per_strategy,
            **shared,
        )
        kwargs: Dict[str, Any] = {
            "strategies": parse_list(entry.pop("strategies")),
            "modes": parse_list(entry.pop("modes", "single")),
            "backbones": parse_list(raw.get("backbones")) or [None],
            "seeds": parse_ints(entry.pop("seeds", [0])),
            "ks": parse_ks(entry.pop("ks", ["all"])),
        }
        if experiment == "prompt-shape":
            kwargs["prompt_lengths"] = parse_ints(entry.pop("prompt_lengths", list(DEFAULT_PROMPT_LENGTHS)))
            kwargs["depths"] = parse_list(entry.pop("depths", list(DEFAULT_DEPTHS)))
        if entry:
            raise StudyError(f"{path}: unknown keys in experiment {experiment!r}: {sorted(entry)}")
        experiments.append((settings, kwargs))
    return Grid(
        path=path,
        results=Path(raw.get("results", path.parent / "results.jsonl")),
        report=Path(raw.get("report", path.parent)),
        work_dir=Path(raw.get("work_dir", "training/study")),
        experiments=experiments,
        seconds_per_step={str(k): float(v) for k, v in (raw.get("seconds_per_step") or {}).items()},
        step_factors={str(d["train"]): float(d.get("step_factor", 1.0)) for d in datasets.values()},
        overheads={str(d["train"]): float(d["overhead_s"]) for d in datasets.values() if "overhead_s" in d},
        overhead_s=float(raw.get("overhead_s", DEFAULT_OVERHEAD_S)),
        timeout=float(raw["timeout"]) if raw.get("timeout") else None,
        shares_report_with=[Path(p) for p in parse_list(raw.get("shares_report_with"))],
    )


def step_kind(spec: RunSpec, known: Dict[str, float]) -> str:
    """The ``seconds_per_step`` key of a run: ``<mode>-frozen`` (backbone frozen),
    ``<mode>-hard`` (hard prompt; ``<mode>`` when the table has no such entry) or ``<mode>``."""
    if spec.frozen:
        return f"{spec.mode}-frozen"
    if spec.hard_prompt and f"{spec.mode}-hard" in known:
        return f"{spec.mode}-hard"
    return spec.mode


def estimate(
    grid: Grid, done: Optional[Dict[str, str]] = None, finished: Optional[set] = None
) -> Dict[str, Any]:
    """Training runs (identical runs of several experiments counted once), steps and
    hours per experiment; ``done``: key -> recipe of finished runs, ``finished``:
    their ``(signature, recipe)`` (a run another experiment finished is copied,
    not trained); neither is counted."""
    done = done or {}
    trained: set = set(finished or ())
    per_experiment: Dict[str, Dict[str, float]] = {}
    for spec in grid.plan():
        entry = per_experiment.setdefault(spec.experiment, {"runs": 0, "trained": 0, "steps": 0, "hours": 0.0})
        entry["runs"] += 1
        identity = (spec.signature, spec.recipe)
        if identity in trained or done.get(spec.key) == spec.recipe:
            continue
        trained.add(identity)
        kind = step_kind(spec, grid.seconds_per_step)
        if kind not in grid.seconds_per_step:
            raise StudyError(f"{grid.path}: seconds_per_step has no entry {kind!r}")
        steps = spec.max_steps or 0
        entry["trained"] += 1
        entry["steps"] += steps
        factor = grid.step_factors.get(spec.train, 1.0)
        overhead = grid.overheads.get(spec.train, grid.overhead_s)
        entry["hours"] += (steps * grid.seconds_per_step[kind] * factor + overhead) / 3600
    total = {k: sum(e[k] for e in per_experiment.values()) for k in ("runs", "trained", "steps", "hours")}
    return {"experiments": per_experiment, "total": total}


def format_estimate(result: Dict[str, Any]) -> str:
    lines = [f"{'experiment':<14} {'runs':>5} {'trained':>8} {'steps':>8} {'hours':>6}"]
    for name, e in list(result["experiments"].items()) + [("total", result["total"])]:
        lines.append(f"{name:<14} {e['runs']:>5} {e['trained']:>8} {e['steps']:>8} {e['hours']:>6.2f}")
    return "\n".join(lines)


def run_study(
    grid: Grid,
    *,
    isolation: str = "subprocess",
    retry_failed: bool = False,
    plots: bool = True,
    log: Callable[[str], None] = print,
    only: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Run every experiment of the grid (``only``: just those) resumably, then write
    the report of the whole grid; returns the report summary."""
    from .report import render_report

    grid.only(only)  # names checked before anything runs
    current = grid.companion_recipes()  # the report's current recipes: the companions', then this grid's
    for settings, kwargs in grid.experiments:
        specs = plan_runs(settings, warn=lambda m: log(f"warning: {m}"), **kwargs)
        current.update({spec.key: spec.recipe for spec in specs})
        if only and settings.experiment not in only:
            continue
        log(f"== {settings.experiment}: {len(specs)} runs")
        summary = run_grid(
            specs, grid.results, grid.work_dir, isolation=isolation, retry_failed=retry_failed, timeout=grid.timeout, log=log
        )
        log(str(summary))
    return render_report(grid.results, grid.report, plots=plots, current_recipes=current)
