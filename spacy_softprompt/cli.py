"""``python -m spacy_softprompt <command>``: data conversion, scoring, training helpers,
evaluation and annotation. Every command has ``--help``."""
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .memory import MALLOC_ENV, MALLOC_SETTINGS, apply_malloc_setting

#: ``annotate``'s default notes per batch: on a GPU a backbone call of fewer than ~30 windows is
#: bound by kernel launches (docs/gpu.md, "Why max_batch_items is 16,384")
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 32

app = typer.Typer(
    name="spacy_softprompt",
    help=(
        "Prompt-tuned clinical encoders as spaCy pipelines. A failure about your input, options or "
        "model prints one line 'error: ...' and exits with status 2; set SPACY_SOFTPROMPT_TRACEBACK=1 "
        "to see the full traceback instead."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
    context_settings={"help_option_names": ["-h", "--help"]},
)

SCHEMA_HELP = "Schema name (maccrobat_medication, ddi2013, n2c2_2018, ...) or path to a schema JSON; omit to keep everything."


@app.command()
def convert(
    in_dir: Path = typer.Argument(..., help="Folder of brat .txt/.ann pairs (searched recursively)."),
    out_path: Path = typer.Argument(..., help="Output .spacy DocBin."),
    schema: Optional[str] = typer.Option(None, "--schema", "-s", help=SCHEMA_HELP),
    strict: bool = typer.Option(False, "--strict", help="Turn annotation warnings into errors."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write conversion statistics and issues as JSON."),
) -> None:
    """brat -> DocBin, printing counts and any misaligned or mismatched annotations."""
    from .data.readers import convert_brat_dir

    stats = convert_brat_dir(in_dir, out_path, schema=schema, strict=strict)
    typer.echo(str(stats))
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(stats.to_dict(), indent=2), encoding="utf8")


@app.command()
def export(
    in_path: Path = typer.Argument(..., help="A .spacy DocBin (gold or predicted)."),
    out_dir: Path = typer.Argument(..., help="Folder for the .txt/.ann pairs."),
    schema: Optional[str] = typer.Option(
        None, "--schema", "-s",
        help="Write in this schema's source form (e.g. n2c2_2022_sdoh: StatusTime + StatusTimeVal attribute + events) instead of the target labels.",
    ),
) -> None:
    """DocBin -> brat (entities, relations, discontinuous fragments preserved)."""
    from .data.readers import export_docbin

    written = export_docbin(in_path, out_dir, schema=schema)
    typer.echo(f"wrote {len(written)} documents to {out_dir}")


@app.command()
def score(
    gold_dir: Path = typer.Argument(..., help="Gold brat folder."),
    pred_dir: Path = typer.Argument(..., help="Predicted brat folder (same file names)."),
    schema: Optional[str] = typer.Option(None, "--schema", "-s", help=SCHEMA_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the metrics as JSON."),
    matching: str = typer.Option(
        "any", "--matching",
        help="Counting: 'n2c2' (the official track2-evaluate-ver4.py: every line, in file order; quote this) or 'any' (distinct items).",
    ),
    missing_pred: Optional[str] = typer.Option(
        None, "--missing-pred",
        help="Gold documents without a prediction .ann: 'skip' (default with --matching n2c2, as the official script) or 'miss' (default with any).",
    ),
) -> None:
    """Score brat against brat: strict/lenient entity and relation P/R/F1 (n2c2 2018 style).

    Prints the counting policy it used, then the table, then notes (repeated lines, ...)."""
    from .brat_scoring import score_brat_dirs
    from .scoring import format_table

    scores = score_brat_dirs(gold_dir, pred_dir, schema=schema, lenient_matching=matching, missing_pred=missing_pred)
    for line in _score_summary(scores):
        typer.echo(line)
    typer.echo(format_table(scores))
    for line in _score_notes(scores):
        typer.echo(line)
    _write_json(output, scores)


#: notes printed by `score` (all of them go to --output)
MAX_NOTES = 20


def _score_summary(scores: dict) -> List[str]:
    """The policy `score` used and what it did with missing and extra files."""
    from .brat_scoring import ScoringPolicy

    policy = scores["policy"]
    lines = ScoringPolicy(policy["matching"], policy["missing_pred"], policy["schema"]).describe()
    missing = scores["missing_predictions"]
    if missing:
        what = "skipped" if policy["missing_pred"] == "skip" else "scored as predicting nothing"
        names = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        lines.append(f"{len(missing)} gold document(s) without a prediction .ann, {what}: {names}")
    extra = scores["unmatched_predictions"]
    if extra:
        lines.append(f"{len(extra)} prediction file(s) without gold, not scored: " + ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""))
    lines.append(f"scored {scores['n_scored']} of {scores['n_docs']} gold documents")
    return lines


def _score_notes(scores: dict) -> List[str]:
    """Repeated lines, outside-schema predictions and readings that differ from the official script."""
    lines = []
    rep = scores["repeated"]
    if rep["gold"] or rep["pred"]:
        how = "each counted" if scores["policy"]["matching"] == "n2c2" else "each counted once"
        lines.append(f"warning: repeated annotation lines: {rep['gold']} in gold, {rep['pred']} in predictions ({how}; see the notes)")
    outside = scores["outside_schema"]
    n_out = sum(sum(c.values()) for c in outside.values())
    if n_out:
        lines.append(f"warning: {n_out} predicted line(s) outside the schema, counted as false positives (rows '... (outside schema)')")
    notes = scores["notes"]
    for note in notes[:MAX_NOTES]:
        where = f"{note['file']}:{note['line']}" if note["line"] else note["file"]
        ann = f" [{note['ann_id']}]" if note["ann_id"] else ""
        lines.append(f"note: {where}{ann}: {note['message']}")
    if len(notes) > MAX_NOTES:
        lines.append(f"note: ... {len(notes) - MAX_NOTES} more (all in --output JSON)")
    return lines


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="Pipeline folder or installed package name."),
    data_path: Path = typer.Argument(..., help="Gold .spacy DocBin."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the metrics as JSON."),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id, -1 for CPU."),
    batch_size: int = typer.Option(8, "--batch-size", "-b"),
    matching: str = typer.Option("any", "--matching", help="Lenient counting: 'any' or 'n2c2'."),
) -> None:
    """Run a pipeline on gold texts and print strict/lenient entity and relation scores."""
    from .evaluation import evaluate_model
    from .scoring import format_table

    scores = evaluate_model(model, data_path, output, gpu_id=gpu_id, batch_size=batch_size, lenient_matching=matching)
    for warning in scores.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(format_table(scores))
    typer.echo(f"{scores['n_docs']} docs, {scores['n_words']} words, {scores['words_per_second']} words/s")
    split = ", ".join(f"{k} {v:.2f}" for k, v in scores.get("seconds_per_component", {}).items())
    typer.echo(f"seconds: {split}; first batch {scores.get('seconds_first_batch', 0):.2f}")


@app.command(context_settings={"ignore_unknown_options": True})
def compare(
    files: List[str] = typer.Argument(..., help="A1.json [A2.json ...] --vs B1.json [B2.json ...]: one metrics JSON per seed."),
    names: Optional[str] = typer.Option(None, "--names", help="Two names, e.g. soft,hf (default A,B)."),
    resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the resampling."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the comparison as JSON."),
) -> None:
    """Compare two systems: F1 mean ± sd over seeds and a paired bootstrap 95% interval.

    The interval is of the difference, from the per-document counts ("per_doc") that
    'evaluate --output' writes."""
    from .compare import compare_files, format_comparison, parse_names

    if files.count("--vs") != 1 or files[0] == "--vs" or files[-1] == "--vs":
        typer.echo("error: expected A1.json [A2.json ...] --vs B1.json [B2.json ...]", err=True)
        raise typer.Exit(code=2)
    split = files.index("--vs")
    try:
        result = compare_files(files[:split], files[split + 1 :], names=parse_names(names), n_resamples=resamples, seed=seed)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2)
    typer.echo(format_comparison(result))
    _write_json(output, result)


@app.command()
def annotate(
    model: str = typer.Argument(..., help="Pipeline folder or installed package name."),
    source: Path = typer.Argument(..., help="Folder of .txt files, a .jsonl file of {id, text}, or Parquet (ray engine)."),
    output: Path = typer.Argument(..., help="Output folder (brat; always a folder with --engine ray) or .jsonl file."),
    output_format: str = typer.Option("brat", "--format", "-f", help="brat or jsonl; with --engine ray also parquet (brat = JSONL shards + brat files)."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b", help=f"notes per batch (default {CPU_BATCH_SIZE} on a CPU, {GPU_BATCH_SIZE} with --gpu-id or --gpus-per-worker: docs/speed.md)."
    ),
    n_process: int = typer.Option(
        1, "--n-process", "-n", help="worker processes (local engine), each with cores/N torch threads; with --gpu-id they share that GPU (docs/speed.md)."
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g", help="GPU id (-1: CPU); with --n-process N all N workers use it."),
    overlap: bool = typer.Option(
        False, "--overlap", help="run the transformer of the next batch in a background thread while the heads work on this one, in this process or in each worker (--n-process, ray); for a GPU (docs/speed.md)."
    ),
    malloc: str = typer.Option(
        "retain", "--malloc", help="retain: keep freed memory for the next batch (glibc; fewer page faults, memory stays at its peak), in every worker too; default: glibc's own behaviour (docs/speed.md)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data, sharded, exactly once)."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: 'auto', 'ray://host:10001'; default starts a local cluster."),
    workers: int = typer.Option(1, "--workers", help="ray: worker actors, each loads the pipeline once."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="ray: 0 (CPU), or a share of a GPU: 0.25 puts 4 workers on one GPU (docs/speed.md)."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="ray: CPUs (and torch threads) per worker."),
    shard_size: int = typer.Option(1000, "--shard-size", help="ray: notes per shard."),
    code: Optional[Path] = typer.Option(None, "--code", help="ray: Python file with custom components, imported by each worker."),
    schema: Optional[str] = typer.Option(
        None, "--schema", "-s",
        help="brat output: write it in this schema's source form (e.g. n2c2_2022_sdoh: StatusTime + StatusTimeVal attribute + events), not the pipeline's labels.",
    ),
) -> None:
    """Annotate notes; resumable (skips documents already written), failures reported, never lost.

    One run per output at a time; see docs/guarantees.md for what is guaranteed."""
    if engine not in ("local", "ray"):
        raise CliUsageError(f"--engine {engine!r}: use local or ray")
    if batch_size is None:
        batch_size = GPU_BATCH_SIZE if (gpu_id >= 0 or gpus_per_worker > 0) else CPU_BATCH_SIZE
    if batch_size < 1:
        raise CliUsageError(f"--batch-size {batch_size}: must be at least 1")
    _check_malloc(malloc)
    if engine == "ray":
        _annotate_on_ray(model, source, output, output_format, batch_size, quiet, address, workers,
                         gpus_per_worker, cpus_per_worker, shard_size, code, schema, overlap, malloc)
        return
    os.environ[MALLOC_ENV] = malloc  # spawned workers (--n-process) read it
    apply_malloc_setting(malloc)
    from .annotate import annotate as run_annotate
    from .annotate import check_apart, check_brat_schema, check_output, check_source, errors_path_for

    if output_format not in ("brat", "jsonl"):
        raise CliUsageError(f"--format {output_format!r}: use brat or jsonl (parquet needs --engine ray)")
    check_source(source)
    check_output(output, output_format)
    check_apart(source, output, output_is_folder=output_format == "brat")
    brat_schema = check_brat_schema(schema, output_format)  # before the pipeline loads
    # with --n-process N the spawned workers take the GPU; this process stays on the CPU
    nlp = _load_model(model, gpu_id if n_process == 1 else -1)
    report = run_annotate(
        nlp, source, output, output_format=output_format, batch_size=batch_size, n_process=n_process,
        progress=not quiet, gpu_id=gpu_id, brat_schema=brat_schema, overlap=overlap,
    )
    typer.echo(
        f"written {report.written}, already there {report.skipped_existing}, failed {len(report.failed)}"
        + (f" (see {errors_path_for(Path(output), output_format)})" if report.failed else "")
    )
    if report.failed:
        raise typer.Exit(code=3)


def _check_malloc(malloc: str) -> str:
    """``--malloc``, refused before anything loads when it is not a setting of :mod:`.memory`."""
    if malloc not in MALLOC_SETTINGS:
        raise CliUsageError(f"--malloc {malloc!r}: use {' or '.join(MALLOC_SETTINGS)}")
    return malloc


def _load_model(model: str, gpu_id: int = -1):
    """The pipeline, or one error line naming the component and file that failed."""
    import spacy

    from .loading import load_pipeline

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    return load_pipeline(model)


def _annotate_on_ray(model, source, output, output_format, batch_size, quiet, address, workers,
                     gpus_per_worker, cpus_per_worker, shard_size, code, schema=None, overlap=False,
                     malloc="default") -> None:
    from .annotate import check_apart, check_brat_schema, check_source
    from .scale import annotate_on_ray

    if output_format not in ("brat", "jsonl", "parquet"):
        raise CliUsageError(f"--format {output_format!r}: use brat, jsonl or parquet")
    if workers < 1 or shard_size < 1:
        raise CliUsageError("--workers and --shard-size must be at least 1")
    check_source(source, extra_suffixes=(".parquet",))
    brat_schema = check_brat_schema(schema, output_format)
    check_apart(source, output, output_is_folder=True)
    if output.exists() and not output.is_dir():
        raise CliUsageError(f"{output}: the ray engine writes a folder, and this is a file")
    if code is not None and not code.is_file():
        raise CliUsageError(f"--code {code}: no such file")
    if Path(model).exists():  # workers load it; a broken folder is named here, before a cluster starts
        from .loading import check_pipeline_folder

        check_pipeline_folder(Path(model))
    result = annotate_on_ray(
        model, source, output, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker, shard_size=shard_size, batch_size=batch_size, code=code,
        output_format="jsonl" if output_format == "brat" else output_format, brat=output_format == "brat",
        brat_schema=brat_schema, progress=not quiet, overlap=overlap, malloc=malloc,
    )
    run = result["run"]
    typer.echo(
        f"verified {result['notes']} notes in {result['shards']} shards: ok {result['ok']}, failed {result['failed']}"
        f" (this run: {run['shards_done']} shards done, {run['shards_skipped']} already there"
        + (f", {run['notes_per_second']} notes/s" if run["notes_per_second"] else "") + ")"
        + (f"; see {output / 'annotate_errors.jsonl'}" if result["failed"] else "")
    )
    if result["failed"]:
        raise typer.Exit(code=3)


@app.command()
def assets(
    corpus: str = typer.Argument(..., help="Corpus folder name, e.g. maccrobat2020."),
    dest: Path = typer.Argument(..., help="Where the corpus should appear (a link to the mirror)."),
    mirror: Optional[Path] = typer.Option(None, "--mirror", help="Local mirror folder holding <corpus>/ (air-gapped sites)."),
) -> None:
    """Make a corpus available under assets/ from a local mirror (linked, not copied)."""
    from .data.assets import fetch_corpus

    path = fetch_corpus(corpus, dest, mirror=mirror)
    typer.echo(f"{corpus}: {path}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., help="Training config."),
    output_path: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder."),
    gpu_id: int = typer.Option(-1, "--gpu-id", "-g"),
    curve: Optional[Path] = typer.Option(
        None, "--curve", help="Also write the dev curve (step, score, entity and relation strict F1, seconds, peak memory in MB so far) to this JSON file, updated at every evaluation."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Go on from the checkpoint a killed run left in --output (same config and overrides; training.patience may change); without it an old checkpoint is discarded."
    ),
    malloc: str = typer.Option(
        "default", "--malloc", help="default: glibc's own behaviour; retain: keep freed memory for the next step (glibc; fewer page faults, but the heap can grow step after step: 2.3 GB more in 100 fine-tuning steps; docs/speed.md)."
    ),
) -> None:
    """Train a pipeline (spacy train), resumable from its last dev evaluation with --resume.

    'package:' backbone names are resolved to folders (so plain spacy-transformers
    architectures, the baseline, can use the offline backbone too), and a checkpoint is
    written to --output/checkpoint after every dev evaluation, which --resume continues
    from. Extra --section.key value overrides are passed on."""
    from spacy.cli._util import parse_config_overrides, setup_gpu, show_validation_error
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    from .backbones import resolve_backbone
    from .training_loop import train_pipeline

    if not config_path.is_file():
        raise CliUsageError(f"config file not found: {config_path}")
    apply_malloc_setting(_check_malloc(malloc))
    overrides = parse_config_overrides(ctx.args)
    if "paths.backbone" in overrides:
        overrides["paths.backbone"] = resolve_backbone(overrides["paths.backbone"])
    else:
        backbone = load_config(config_path, interpolate=False)["paths"].get("backbone")
        if isinstance(backbone, str):
            overrides["paths.backbone"] = resolve_backbone(backbone)
    setup_gpu(gpu_id)
    with show_validation_error(config_path):
        config = load_config(config_path, overrides=overrides, interpolate=False)
    if curve is not None:
        from .study.curve import LOGGER_NAME, register

        # the config's own logger keeps logging; the curve logger wraps it
        register()
        config["training"]["logger"] = {"@loggers": LOGGER_NAME, "path": str(curve), "inner": dict(config["training"]["logger"])}
        curve.parent.mkdir(parents=True, exist_ok=True)
    with show_validation_error(config_path, hint_fill=False):
        nlp = init_nlp(config, use_gpu=gpu_id)
    train_pipeline(nlp, output_path, use_gpu=gpu_id, stdout=sys.stdout, stderr=sys.stderr, resume=resume)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def bench(
    ctx: typer.Context,
    name: Optional[str] = typer.Argument(None, help="inference, training, packaging, scaling, encoder, mrc, or all."),
) -> None:
    """Run a benchmark script from benchmarks/ (figures printed and saved as JSON).

    Extra options, --help included, are passed on to the script."""
    from .bench import main as bench_main

    raise typer.Exit(code=bench_main([name or "--help", *ctx.args]))


from .study.cli import report as study_report, study_app  # noqa: E402  (heavy imports happen inside the commands)

app.add_typer(study_app, name="study")
app.command(name="report")(study_report)


def _write_json(path: Optional[Path], data) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf8")
    typer.echo(f"wrote {path}")


#: set to 1 to see the full traceback of the errors below instead of one line
TRACEBACK_ENV = "SPACY_SOFTPROMPT_TRACEBACK"


class CliUsageError(Exception):
    """An option or argument that cannot work, found before anything is loaded."""


def _user_errors() -> tuple:
    """Errors about the user's input or environment: shown as one line, not a traceback."""
    from confection import ConfigValidationError

    from .backbones import BackboneNotFound
    from .bench import BenchmarkError
    from .checkpoint import CheckpointError
    from .compat import UnsupportedTransformersError
    from .data.errors import BratError
    from .encoder import BackboneChecksumError, BackboneNotFoundError, CorruptModelError
    from .loading import PipelineLoadError
    from .parallel import WorkerError
    from .safe_io import AnnotateError
    from .study.runner import StudyError

    return (
        CliUsageError,
        CheckpointError,
        AnnotateError,
        PipelineLoadError,
        BratError,
        BackboneNotFound,
        BackboneNotFoundError,
        BackboneChecksumError,
        CorruptModelError,
        StudyError,
        WorkerError,
        BenchmarkError,
        UnsupportedTransformersError,
        ConfigValidationError,
        OSError,
    )


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: known errors print one line ``error: <message>`` and exit with
    status 2 (``SPACY_SOFTPROMPT_TRACEBACK=1``: the traceback instead)."""
    import os

    from .loading import one_line

    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="python -m spacy_softprompt")
    except Exception as err:  # noqa: BLE001  (re-raised unless it is one of ours)
        if os.environ.get(TRACEBACK_ENV) == "1" or not isinstance(err, _user_errors()):
            raise
        typer.echo(f"error: {one_line(str(err), limit=1000) or type(err).__name__}", err=True)
        raise SystemExit(2) from None
