"""Annotate on Ray Data: pack, map shards to actors, verify.

``annotate_on_ray`` packs the input (:mod:`.shards`), skips shards whose output
exists, and maps the others with ``Dataset.map_batches(ShardAnnotator,
compute=ActorPoolStrategy(size=workers), num_gpus=g, batch_size=1)``: each actor
loads the pipeline once (from its path or package name; nothing is pickled but
these names) and calls :func:`.worker.annotate_shard` per shard. A worker that
dies is restarted and its shard redone (bounded by ``max_worker_restarts``);
nothing is configured to drop failed blocks. Ray is imported only here, and only
when a job runs.
"""
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..annotate import check_apart
from ..data.schema import Schema, load_schema, schema_from_dict
from ..memory import MALLOC_SETTINGS
from ..safe_io import LOCK_FILE, OutputLock, remove_partial_files
from .errors import ScaleError, WorkerSetupError
from .shards import ShardPlan, pack, read_shard
from .verify import verify
from .worker import ShardResult, annotate_shard, brat_names_for

BRAT_DIR = "brat"
_SETUP_FAILED = "worker setup failed:"


class ShardAnnotator:
    """Ray Data actor: one pipeline per worker process, one shard per batch row."""

    def __init__(
        self,
        model: str,
        output_format: str,
        batch_size: int,
        brat_dir: Optional[str],
        use_gpu: bool,
        torch_threads: int,
        code: Optional[str] = None,
        brat_schema: Optional[Dict[str, Any]] = None,
        overlap: bool = False,
        malloc: str = "default",
    ) -> None:
        import spacy

        from ..memory import apply_malloc_setting

        apply_malloc_setting(malloc)  # before the pipeline allocates anything

        if code:
            from spacy.util import import_file

            import_file("spacy_softprompt_user_code", code)
        if use_gpu:
            import ray

            try:
                spacy.require_gpu(0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            except Exception as err:  # noqa: BLE001 - re-raised with what the worker was given
                raise WorkerSetupError(
                    f"{_SETUP_FAILED} given GPU {ray.get_gpu_ids()} but spacy.require_gpu failed "
                    f"({type(err).__name__}: {err}); install cupy for this CUDA, or use --gpus-per-worker 0"
                ) from None
        self.nlp = spacy.load(model)
        if not use_gpu and "torch" in sys.modules:  # a pipeline without torch never imports it
            sys.modules["torch"].set_num_threads(max(1, torch_threads))
        self.output_format = output_format
        self.batch_size = batch_size
        self.brat_dir = Path(brat_dir) if brat_dir else None
        self.brat_schema = schema_from_dict(brat_schema) if brat_schema is not None else None
        self.overlap = overlap

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        results = [
            annotate_shard(self.nlp, Path(shard_in), Path(shard_out), output_format=self.output_format,
                           batch_size=self.batch_size, brat_dir=self.brat_dir,
                           brat_names=json.loads(names) if self.brat_dir is not None else None,
                           brat_schema=self.brat_schema, overlap=self.overlap).to_dict()
            for shard_in, shard_out, names in zip(batch["shard_in"], batch["shard_out"], batch["brat_names"])
        ]
        return {key: [r[key] for r in results] for key in ShardResult.__dataclass_fields__}


def annotate_on_ray(
    model: Union[str, Path],
    source: Union[str, Path],
    output: Union[str, Path],
    *,
    address: Optional[str] = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    shard_size: int = 1000,
    output_format: str = "jsonl",
    brat: bool = False,
    brat_schema: Union[None, str, Path, Schema] = None,
    batch_size: int = 64,
    code: Optional[Union[str, Path]] = None,
    runtime_env: Optional[Dict[str, Any]] = None,
    max_worker_restarts: int = 3,
    progress: bool = True,
    overlap: bool = False,
    malloc: str = "default",
) -> Dict[str, Any]:
    """Annotate ``source`` into the folder ``output`` on Ray; return the success
    marker (counts) plus this run's figures. ``address``: None starts (or joins,
    with ``RAY_ADDRESS``) a local cluster, ``"auto"`` or ``"ray://host:10001"``
    joins one; an already initialised Ray is used as it is. ``output`` must be a
    folder every worker can read and write (shared storage on a cluster).
    ``overlap``: each worker runs the transformer of its next batch in a background
    thread while the heads work on this one (:mod:`~spacy_softprompt.overlap`).
    ``malloc="retain"``: each worker keeps freed memory for reuse (:mod:`~spacy_softprompt.memory`)."""
    if malloc not in MALLOC_SETTINGS:
        raise ValueError(f"malloc {malloc!r}: use one of {', '.join(MALLOC_SETTINGS)}")
    if output_format not in ("jsonl", "parquet"):
        raise ValueError(f"Unknown output format '{output_format}': use 'jsonl' or 'parquet' (and brat=True for brat files).")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if brat_schema is not None and not brat:
        raise ValueError("brat_schema applies to brat files: give brat=True")
    schema = load_schema(brat_schema)  # a bad schema fails here, before a cluster starts
    start = time.perf_counter()
    output = Path(output).resolve()  # workers may run elsewhere: absolute paths only
    if output.exists() and not output.is_dir():
        raise ScaleError(f"{output}: the ray engine writes a folder, and this is a file")
    model = str(Path(model).resolve()) if Path(model).exists() else str(model)  # a folder, or a package name
    check_apart(Path(source), output, output_is_folder=True)
    output.mkdir(parents=True, exist_ok=True)
    with OutputLock(output / LOCK_FILE, what=str(output)):
        remove_partial_files(output)  # left by killed writers: the lock says none is running
        plan = pack(Path(source), output, shard_size)
        pack_s = time.perf_counter() - start
        brat_dir = output / BRAT_DIR if brat else None
        pending = [s for s in plan.shards if not plan.output_path(s, output_format).is_file()]
        names: Dict[str, Dict[str, str]] = {}
        if brat_dir is not None and pending:
            differing = brat_names_for((r["id"] for s in plan.shards for r in read_shard(plan.input_path(s))), brat_dir)
            for shard in pending:
                ids = [r["id"] for r in read_shard(plan.input_path(shard))]
                names[shard.name] = {i: differing[i] for i in ids if i in differing}
        run: Dict[str, Any] = {"shards_skipped": len(plan.shards) - len(pending), "shards_done": 0, "notes_done": 0,
                               "pack_seconds": round(pack_s, 3), "cluster_start_seconds": 0.0, "annotate_seconds": 0.0}
        if pending:
            actor_kwargs = {
                "model": model, "output_format": output_format, "batch_size": batch_size,
                "brat_dir": str(brat_dir) if brat_dir else None, "use_gpu": gpus_per_worker > 0,
                "torch_threads": max(1, int(cpus_per_worker)), "code": str(Path(code).resolve()) if code else None,
                "brat_schema": schema.to_dict() if schema is not None else None,  # plain data: workers may run elsewhere
                "overlap": overlap, "malloc": malloc,
            }
            run.update(_run_on_ray(plan, pending, output_format, actor_kwargs, names, address=address, workers=workers,
                                   gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                                   runtime_env=runtime_env, max_worker_restarts=max_worker_restarts, progress=progress))
        marker = verify(plan, output_format, extra={"engine": "ray"})
    run["seconds"] = round(time.perf_counter() - start, 3)
    run["notes_per_second"] = round(run["notes_done"] / run["annotate_seconds"], 2) if run["annotate_seconds"] else None
    return {**marker, "run": run}


def _run_on_ray(
    plan: ShardPlan,
    pending: list,
    output_format: str,
    actor_kwargs: Dict[str, Any],
    brat_names: Dict[str, Dict[str, str]],
    *,
    address: Optional[str],
    workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    runtime_env: Optional[Dict[str, Any]],
    max_worker_restarts: int,
    progress: bool,
) -> Dict[str, Any]:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise ScaleError("the ray engine needs Ray Data: pip install 'spacy-softprompt[scale]'") from err
    from tqdm import tqdm

    started_here = not ray.is_initialized()
    t0 = time.perf_counter()
    if started_here:
        try:
            # No dashboard. (Ray 2.x's raylet still starts its own dashboard and runtime-env
            # agents; they are Ray's and end with the raylet: see docs/guarantees.md.)
            ray.init(address=address, include_dashboard=False, runtime_env=runtime_env, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ScaleError(f"could not start or join a Ray cluster at {address or 'a new local one'}: {err}") from err
    cluster_s = time.perf_counter() - t0
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.max_errored_blocks)
    ctx.enable_progress_bars = False  # ours below counts notes
    ctx.max_errored_blocks = 0  # a failed shard fails the job: never dropped
    items = [{"shard_in": str(plan.input_path(s)), "shard_out": str(plan.output_path(s, output_format)),
              "brat_names": json.dumps(brat_names.get(s.name, {}))} for s in pending]
    total = sum(s.notes for s in pending)
    done: Dict[str, Any] = {"shards_done": 0, "notes_done": 0, "worker_cpu_seconds": 0.0}
    bar = tqdm(total=total, unit="note", disable=not progress, desc=f"annotate 0/{len(pending)} shards")
    t1 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Actor options still go through **ray_remote_args in Ray 2.60 (deprecated for 2.64):
            # they bound the restarts, so a shard that kills every worker fails the job.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                ShardAnnotator,
                fn_constructor_kwargs=actor_kwargs,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker or None,
                max_restarts=max_worker_restarts,
                max_task_retries=max_worker_restarts,
            )
        for row in dataset.iter_rows():
            done["shards_done"] += 1
            done["notes_done"] += int(row["notes"])
            done["worker_cpu_seconds"] += float(row["cpu_seconds"])
            bar.update(int(row["notes"]))
            bar.set_description(f"annotate {done['shards_done']}/{len(pending)} shards")
    except Exception as err:  # noqa: BLE001 - re-raised as one line without worker output
        raise ScaleError(
            f"the Ray job stopped ({type(err).__name__}{_setup_message(err)}); "
            f"{done['shards_done']} of {len(pending)} pending shards finished and are kept: rerun to resume"
        ) from err
    finally:
        bar.close()
        ctx.enable_progress_bars, ctx.max_errored_blocks = saved
        if started_here:
            ray.shutdown()
    done["worker_cpu_seconds"] = round(done["worker_cpu_seconds"], 3)
    return {**done, "cluster_start_seconds": round(cluster_s, 3), "annotate_seconds": round(time.perf_counter() - t1, 3)}


def _setup_message(err: BaseException) -> str:
    """The worker setup error's own line, when that is what stopped the job."""
    for line in str(err).splitlines():
        if _SETUP_FAILED in line:
            return ": " + line[line.index(_SETUP_FAILED):].strip()
    return ""
