"""Command line of the study (imports stay light: spaCy/torch load inside the commands).

Wired into ``python -m spacy_softprompt`` as the ``study`` command group and
the top-level ``report`` command; also runs standalone as
``python -m spacy_softprompt.study run|split|subsample|report``.
"""
from pathlib import Path
from typing import List, Optional

import typer

study_app = typer.Typer(
    name="study",
    help="The prompt-learning study: run grids (resumable) and render the report.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
    context_settings={"help_option_names": ["-h", "--help"]},
)


@study_app.command("run")
def run(
    grid: Optional[Path] = typer.Option(None, "--grid", help="A whole study (YAML grid file, e.g. docs/study_cpu/grid.yml): run every experiment, resumably, then write its report; the other options are ignored except --isolation, --retry-failed, --dry-run, --threads (overrides the file's) and --experiment (run only that experiment; the report still covers the whole grid)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="strategies | fewshot | transfer | prompt-shape | mrc"),
    train: Optional[Path] = typer.Option(None, "--train", help="Training DocBin (.spacy)."),
    dev: Optional[Path] = typer.Option(None, "--dev", help="Dev DocBin (early stopping; scored when there is no --test or with --eval-dev)."),
    test: List[str] = typer.Option([], "--test", help="[NAME=]PATH of a test DocBin; repeat for several (transfer targets). The first is the primary one."),
    train_name: Optional[str] = typer.Option(None, "--train-name", help="Name of the training corpus (transfer: the source; default: file stem)."),
    dev_name: Optional[str] = typer.Option(None, "--dev-name", help="Name of the dev set (default: file stem)."),
    strategies: Optional[str] = typer.Option(None, "--strategies", help="Comma list (default: all four; prompt-shape: soft,soft-frozen; mrc: soft)."),
    modes: Optional[str] = typer.Option(None, "--modes", help="Comma list of single | mrc (default: single; mrc: single,mrc)."),
    head: str = typer.Option("token_ner", "--head", help="Single-pass concept head: token_ner (configs tok_<strategy>_<device>.cfg, the product's) | ner (<strategy>_<device>.cfg)."),
    backbones: Optional[str] = typer.Option(None, "--backbones", help="Comma list of backbone names (package:, hub or folder); default: the config's."),
    ks: Optional[str] = typer.Option(None, "--ks", help="Comma list of training-set sizes, 'all' = everything (default: fewshot 5,10,20,50,all; else all)."),
    seeds: str = typer.Option("0", "--seeds", help="Comma list of seeds (training seed and few-shot subset)."),
    prompt_lengths: Optional[str] = typer.Option(None, "--prompt-lengths", help="Comma list of P (default: prompt-shape 1,5,10,20,50,100; else the config's)."),
    depths: Optional[str] = typer.Option(None, "--depths", help="Comma list of input | deep (default: prompt-shape input,deep; else the config's)."),
    device: str = typer.Option("cpu", "--device", help="cpu | gpu: picks the configs' device variant."),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id (device gpu: default 0)."),
    max_steps: int = typer.Option(0, "--max-steps", help="Training steps per run (0: the config's)."),
    eval_frequency: int = typer.Option(0, "--eval-frequency", help="Dev scoring interval (0: max_steps when --max-steps is given, else the config's)."),
    dev_limit: int = typer.Option(0, "--dev-limit", help="Score only the first N dev docs during training (0: all)."),
    eval_limit: int = typer.Option(0, "--eval-limit", help="Score only the first N docs of each evaluation set (0: all)."),
    eval_dev: bool = typer.Option(False, "--eval-dev", help="Also score model-best on dev when test sets are given."),
    schema: Optional[str] = typer.Option(None, "--schema", help="paths.schema for MRC configs (labels and questions)."),
    hard_prompt: Optional[str] = typer.Option(None, "--hard-prompt", help="Hard prompt text for the configs that have one (e.g. another schema's task)."),
    set_: List[str] = typer.Option([], "--set", help="Extra config override section.key=VALUE (JSON value); repeat. Applied to configs that have the key."),
    results: Path = typer.Option(Path("results/study.jsonl"), "--results", help="Results table (JSON lines; a .csv copy is written beside it)."),
    work_dir: Path = typer.Option(Path("training/study"), "--work-dir", help="Run folders (logs, configs, metrics) and few-shot subsets."),
    configs: Path = typer.Option(Path("configs"), "--configs", help="Folder with the configs."),
    isolation: str = typer.Option("subprocess", "--isolation", help="subprocess (one process per run: per-run peak memory) | inline."),
    keep_models: bool = typer.Option(False, "--keep-models", help="Keep model-best/model-last of every run (large)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run again the runs recorded as failed."),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", help="Copy identical runs from other experiments instead of training again."),
    timeout: float = typer.Option(0, "--timeout", help="Seconds per run before it is killed and recorded as failed (0: no limit)."),
    threads: int = typer.Option(0, "--threads", help="torch threads per run (0: torch's default)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the planned runs and exit."),
) -> None:
    """Run one experiment's grid (or a whole study with --grid); every run appends one
    row to the results file. Runs already recorded with the current recipe are
    skipped, so the command resumes after an interruption."""
    if grid is not None:
        _run_grid_file(grid, isolation=isolation, retry_failed=retry_failed, dry_run=dry_run,
                       threads=threads or None, experiment=experiment)
        return
    if experiment is None or train is None or dev is None:
        typer.echo("error: give --grid, or --experiment, --train and --dev", err=True)
        raise typer.Exit(code=2)
    from .runner import (
        DEFAULT_DEPTHS,
        DEFAULT_KS,
        DEFAULT_PROMPT_LENGTHS,
        PROMPT_SHAPE_STRATEGIES,
        StudyError,
        StudySettings,
        parse_ints,
        parse_ks,
        parse_list,
        parse_named_path,
        parse_override,
        plan_runs,
        run_grid,
    )
    from . import STRATEGIES

    try:
        settings = StudySettings(
            experiment=experiment,
            train=str(train),
            dev=str(dev),
            tests=[parse_named_path(t) for t in test],
            train_name=train_name,
            dev_name=dev_name,
            device=device,
            gpu_id=gpu_id,
            max_steps=max_steps or None,
            eval_frequency=eval_frequency or None,
            dev_limit=dev_limit,
            eval_limit=eval_limit,
            eval_dev=eval_dev,
            schema=schema,
            hard_prompt=hard_prompt,
            overrides=dict(parse_override(o) for o in set_),
            configs_dir=str(configs),
            threads=threads,
            head=head,
        )
        default_strategies = {"prompt-shape": PROMPT_SHAPE_STRATEGIES, "mrc": ("soft",)}.get(experiment, STRATEGIES)
        default_modes = ["single", "mrc"] if experiment == "mrc" else ["single"]
        specs = plan_runs(
            settings,
            strategies=parse_list(strategies) or list(default_strategies),
            modes=parse_list(modes) or default_modes,
            backbones=parse_list(backbones) or [None],
            seeds=parse_ints(seeds) or [0],
            ks=parse_ks(ks) if ks else (list(DEFAULT_KS) if experiment == "fewshot" else [None]),
            prompt_lengths=parse_ints(prompt_lengths)
            if prompt_lengths
            else (list(DEFAULT_PROMPT_LENGTHS) if experiment == "prompt-shape" else [None]),
            depths=parse_list(depths) if depths else (list(DEFAULT_DEPTHS) if experiment == "prompt-shape" else [None]),
            warn=lambda message: typer.echo(f"warning: {message}", err=True),
        )
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2)
    for path in [train, dev] + [Path(p) for _, p in settings.tests]:
        if not Path(path).is_file():
            typer.echo(f"error: {path} does not exist", err=True)
            raise typer.Exit(code=2)
    if dry_run:
        for spec in specs:
            typer.echo(f"{spec.key}  [{spec.config}]" + (f"  ({spec.note})" if spec.note else ""))
        typer.echo(f"{len(specs)} runs")
        return
    try:
        summary = run_grid(
            specs,
            results,
            work_dir,
            isolation=isolation,
            keep_models=keep_models,
            retry_failed=retry_failed,
            reuse=reuse,
            timeout=timeout or None,
            log=typer.echo,
        )
    except StudyError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2)
    typer.echo(str(summary))
    typer.echo(f"results: {results}")


def _run_grid_file(
    path: Path, *, isolation: str, retry_failed: bool, dry_run: bool, threads: Optional[int] = None,
    experiment: Optional[str] = None,
) -> None:
    from .grid import estimate, format_estimate, load_grid, run_study
    from .results import latest_rows, read_results
    from .runner import StudyError, claim_holder

    try:
        grid = load_grid(path, threads=threads)
        only = [experiment] if experiment else None
        selected = grid.only(only)
        specs = selected.plan(warn=lambda message: typer.echo(f"warning: {message}", err=True))
        ok_rows = [r for r in latest_rows(read_results(grid.results)) if r.get("status") == "ok"]
        done = {r["key"]: r.get("recipe") for r in ok_rows}
        finished = {(r.get("signature"), r.get("recipe")) for r in ok_rows}
        typer.echo(format_estimate(estimate(selected, done, finished)))
        if not dry_run:
            missing = sorted({p for s in specs for p in [s.train, s.dev] + [path for _, path in s.tests] if not Path(p).is_file()})
            if missing:
                typer.echo(f"error: missing data (spacy project run study-data / study-data-transfer): {', '.join(missing)}", err=True)
                raise typer.Exit(code=2)
        if dry_run:
            for spec in specs:
                holder = claim_holder(Path(grid.work_dir) / spec.experiment / spec.run_id)
                if done.get(spec.key) == spec.recipe:
                    state = "done"
                elif (spec.signature, spec.recipe) in finished:
                    state = "done in another experiment (copied when the grid runs)"
                else:
                    state = f"running ({holder})" if holder else "to run"
                typer.echo(f"{spec.key}  [{spec.config}, {spec.max_steps} steps, recipe {spec.recipe}]  {state}")
            return
        summary = run_study(grid, isolation=isolation, retry_failed=retry_failed, log=typer.echo, only=only)
    except (StudyError, ValueError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2)
    _print_report_summary(summary)


def _print_report_summary(summary) -> None:
    typer.echo(f"{summary['runs']} runs ({summary['failed']} failed, {len(summary.get('stale', []))} stale left out, "
               f"{len(summary.get('not_converged', []))} not converged) -> {summary['report']}")
    for c in summary["conclusions"]:
        typer.echo(f"  ({c['number']}) {c['claim']}: {c.get('verdict_text', c['verdict'])}")


@study_app.command("split")
def split(
    in_path: Path = typer.Argument(..., help="A .spacy DocBin."),
    train_out: Path = typer.Argument(..., help="Output: the remaining documents."),
    dev_out: Path = typer.Argument(..., help="Output: the held-out documents."),
    dev_docs: int = typer.Option(0, "--dev-docs", help="Documents to hold out."),
    dev_fraction: float = typer.Option(0.1, "--dev-fraction", help="Share to hold out when --dev-docs is 0."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Hold out a seeded random dev set (corpora without a dev folder)."""
    from .data import split_docbin

    n_train, n_dev = split_docbin(in_path, train_out, dev_out, n_dev=dev_docs, dev_fraction=dev_fraction, seed=seed)
    typer.echo(f"{in_path}: {n_train} train documents -> {train_out}, {n_dev} dev documents -> {dev_out}")


@study_app.command("subsample")
def subsample(
    in_path: Path = typer.Argument(..., help="A .spacy DocBin."),
    out_path: Path = typer.Argument(..., help="Output DocBin with k documents."),
    k: int = typer.Option(..., "--k", help="Number of documents."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write the few-shot subset the runner uses for (k, seed) (nested: same seed, smaller k = a subset)."""
    from .data import subsample_docbin

    n_docs, n_words = subsample_docbin(in_path, out_path, k, seed)
    typer.echo(f"{out_path}: {n_docs} documents, {n_words} tokens")


def report(
    results: Path = typer.Argument(..., help="Results table written by 'study run' (.jsonl)."),
    out_dir: Path = typer.Argument(..., help="Folder for report.md, the PNG plots, results.csv and summary.json."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Tables only."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="The grid file the results come from: rows whose recipe differs from the one it (and the grids it shares its report with) plans now are left out as stale (without it: from the newest run of the same kind)."),
) -> None:
    """Render the study report: strategy, few-shot, transfer, MRC and prompt-shape tables and plots, convergence, and the four questions answered from intervals."""
    from .report import render_report

    if not results.is_file():
        typer.echo(f"error: {results} does not exist", err=True)
        raise typer.Exit(code=2)
    current = None
    if grid is not None:
        from .grid import load_grid

        current = load_grid(grid).current_recipes()
    summary = render_report(results, out_dir, plots=not no_plots, current_recipes=current)
    _print_report_summary(summary)


study_app.command("report")(report)


def main(argv: Optional[List[str]] = None) -> None:
    import sys

    study_app(args=argv if argv is not None else sys.argv[1:], prog_name="python -m spacy_softprompt.study")
