"""Annotate millions of notes: immutable shards, a Ray-free per-shard function,
a Ray Data driver, and a final exactly-once check.

Importing this package does not import Ray; :func:`annotate_on_ray` does when it runs.
"""
from .errors import DuplicateNoteIdError, InputChangedError, ScaleError, VerificationError, WorkerSetupError
from .outputs import read_records
from .ray_engine import ShardAnnotator, annotate_on_ray
from .shards import ShardPlan, load_plan, pack
from .verify import verify
from .worker import ShardResult, annotate_shard

__all__ = [
    "DuplicateNoteIdError",
    "InputChangedError",
    "ScaleError",
    "ShardAnnotator",
    "ShardPlan",
    "ShardResult",
    "VerificationError",
    "WorkerSetupError",
    "annotate_on_ray",
    "annotate_shard",
    "load_plan",
    "pack",
    "read_records",
    "verify",
]
