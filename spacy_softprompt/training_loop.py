"""spaCy's training loop with a checkpoint after every dev evaluation, and a resume from it.

:func:`train_pipeline` does what ``spacy.training.loop.train`` does (same
batches, updates, evaluations, early stopping, ``model-best`` / ``model-last``
and logger calls) and, when it has an output folder, also writes
``<output>/checkpoint/`` (:mod:`spacy_softprompt.checkpoint`) after each
evaluation. With ``resume=True`` a run whose output holds a checkpoint of the
same config goes on from the step after it: weights, optimizer moments and
learning-rate schedules, the batch stream (replayed from the seed without
training) and the random generators are where the killed run left them, so
on CPU the resumed run ends with the same weights as an uninterrupted one
(``tests/test_training_resume.py``). The checkpoint is removed when training
ends normally.
"""
import shutil
import sys
from pathlib import Path
from timeit import default_timer as timer
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple

from spacy.schemas import ConfigSchemaTraining
from spacy.training.loop import (
    DIR_MODEL_BEST,
    DIR_MODEL_LAST,
    clean_output_dir,
    create_before_to_disk_callback,
    create_evaluation_callback,
    create_train_batches,
    subdivide_batch,
    update_meta,
)
from spacy.util import registry, resolve_dot_names
from thinc.api import fix_random_seed, set_gpu_allocator
from wasabi import Printer

from .checkpoint import (
    config_fingerprint,
    python_random_state,
    read_checkpoint,
    remove_checkpoint,
    restore_checkpoint,
    restore_random_states,
    save_checkpoint,
    set_python_random_state,
)


def train_pipeline(
    nlp,
    output_path: Optional[Path] = None,
    *,
    use_gpu: int = -1,
    stdout: IO = sys.stdout,
    stderr: IO = sys.stderr,
    resume: bool = False,
) -> Tuple[Any, Optional[Path]]:
    """Train an initialised pipeline as ``spacy.training.loop.train`` does, with
    checkpoints in ``output_path``; ``resume``: go on from ``output_path``'s checkpoint
    when it has one (without it, an old checkpoint there is discarded)."""
    msg = Printer(no_print=True)
    output_path = Path(output_path) if output_path is not None else None
    config = nlp.config.interpolate()
    if config["training"]["seed"] is not None:
        fix_random_seed(config["training"]["seed"])
    allocator = config["training"]["gpu_allocator"]
    if use_gpu >= 0 and allocator:
        set_gpu_allocator(allocator)
    T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer = T["optimizer"]
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    frozen, annotating = T["frozen_components"], T["annotating_components"]
    fingerprint = config_fingerprint(nlp.config)
    checkpoints = output_path is not None and optimizer.averages is None and not getattr(optimizer, "use_radam", False)

    state = None
    if output_path is not None:
        output_path.mkdir(parents=True, exist_ok=True)
        if resume:
            state = read_checkpoint(output_path, fingerprint)
        else:
            remove_checkpoint(output_path)
    batches = create_train_batches(nlp, train_corpus, T["batcher"], T["max_epochs"])
    dropouts = _dropouts(T["dropout"])
    if state is None:
        clean_output_dir(output_path)
        progress: Dict[str, Any] = {"step": -1, "results": [], "words": 0, "seconds": 0, "random_at_start": python_random_state()}
    else:
        progress = state["progress"]
        restore_checkpoint(state, nlp, optimizer)
        set_python_random_state(progress["random_at_start"])  # replay the batch stream's shuffles
        for _ in range(progress["step"] + 1):
            next(batches)
            next(dropouts)
            optimizer.step_schedules()
        restore_random_states(state)
        stdout.write(msg.info(f"Resuming after step {progress['step']} from {state['folder']}") + "\n")

    def save_model(is_best: bool) -> None:
        with nlp.use_params(optimizer.averages):
            before_to_disk(nlp).to_disk(output_path / DIR_MODEL_LAST)
        if is_best:
            if (output_path / DIR_MODEL_BEST).exists():
                shutil.rmtree(output_path / DIR_MODEL_BEST)
            shutil.copytree(output_path / DIR_MODEL_LAST, output_path / DIR_MODEL_BEST)

    steps = _train_steps(
        nlp,
        optimizer,
        batches,
        create_evaluation_callback(nlp, dev_corpus, T["score_weights"]),
        dropouts=dropouts,
        eval_frequency=T["eval_frequency"],
        accumulate_gradient=T["accumulate_gradient"],
        patience=T["patience"],
        max_steps=T["max_steps"],
        exclude=frozen,
        annotating_components=annotating,
        before_update=T["before_update"],
        progress=progress,
    )
    stdout.write(msg.info(f"Pipeline: {nlp.pipe_names}") + "\n")
    if frozen:
        stdout.write(msg.info(f"Frozen components: {frozen}") + "\n")
    if annotating:
        stdout.write(msg.info(f"Set annotations on update for: {annotating}") + "\n")
    stdout.write(msg.info(f"Initial learn rate: {optimizer.learn_rate}") + "\n")
    with nlp.select_pipes(disable=frozen):
        log_step, finalize_logger = T["logger"](nlp, stdout, stderr)
    finished = False
    try:
        for _batch, info, is_best in steps:
            if is_best is not None:
                with nlp.select_pipes(disable=frozen):
                    update_meta(T, nlp, info)
                if output_path is not None:
                    save_model(is_best)
                    info["output_path"] = str(output_path / DIR_MODEL_LAST)
                    if checkpoints:
                        save_checkpoint(output_path, nlp, optimizer, progress, fingerprint)
            log_step(info if is_best is not None else None)
        finished = True
    except Exception as error:
        if output_path is not None:
            stdout.write(msg.warn(f"Aborting and saving the final best model. Encountered exception: {error!r}") + "\n")
        raise
    finally:
        finalize_logger()
        if output_path is not None:
            save_model(False)
    if finished and output_path is not None:
        remove_checkpoint(output_path)
    if optimizer.averages:
        nlp.use_params(optimizer.averages)
    if output_path is None:
        return nlp, None
    stdout.write(msg.good("Saved pipeline to output directory", output_path / DIR_MODEL_LAST) + "\n")
    return nlp, output_path / DIR_MODEL_LAST


def _dropouts(dropout) -> Iterator[float]:
    if isinstance(dropout, (int, float)):
        while True:
            yield float(dropout)
    yield from dropout


def _train_steps(
    nlp,
    optimizer,
    batches: Iterator,
    evaluate: Callable[[], Tuple[float, Dict[str, Any]]],
    *,
    dropouts: Iterator[float],
    eval_frequency: int,
    accumulate_gradient: int,
    patience: int,
    max_steps: int,
    exclude: List[str],
    annotating_components: List[str],
    before_update: Optional[Callable],
    progress: Dict[str, Any],
):
    """``spacy.training.loop.train_while_improving`` from ``progress["step"] + 1`` on,
    with the earlier evaluations (``progress["results"]``) counted for the best
    checkpoint and for patience. Updates ``progress`` in place after each step."""
    results: List[Tuple[float, int]] = [tuple(r) for r in progress["results"]]  # type: ignore[misc]
    losses: Dict[str, float] = {}
    start_time = timer() - progress["seconds"]
    step = progress["step"]
    for epoch, batch in batches:
        step += 1
        if before_update:
            before_update(nlp, {"step": step, "epoch": epoch})
        dropout = next(dropouts)
        for subbatch in subdivide_batch(batch, accumulate_gradient):
            nlp.update(subbatch, drop=dropout, losses=losses, sgd=False, exclude=exclude, annotates=annotating_components)
        for name, proc in nlp.pipeline:
            if name not in exclude and getattr(proc, "is_trainable", False) and proc.model not in (True, False, None):
                proc.finish_update(optimizer)
        optimizer.step_schedules()
        if not (step % eval_frequency):
            if optimizer.averages:
                with nlp.use_params(optimizer.averages):
                    score, other_scores = evaluate()
            else:
                score, other_scores = evaluate()
            results.append((score, step))
            progress["results"].append([score, step])
            is_best = score == max(results)[0]
        else:
            score, other_scores, is_best = None, None, None
        progress["words"] += sum(len(eg) for eg in batch)
        seconds = timer() - start_time
        progress.update(step=step, epoch=epoch, seconds=seconds)
        info = {
            "epoch": epoch,
            "step": step,
            "score": score,
            "other_scores": other_scores,
            "losses": losses,
            "checkpoints": results,
            "seconds": int(seconds),
            "words": progress["words"],
        }
        yield batch, info, is_best
        if is_best is not None:
            losses = {}
        best_step = -max((r_score, -r_step) for r_score, r_step in results)[1]
        if patience and (step - best_step) >= patience:
            break
        if max_steps and step >= max_steps:
            break
