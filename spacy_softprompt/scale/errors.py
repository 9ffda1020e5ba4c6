"""Errors of the sharded annotate job; none of them carries note text."""
from ..safe_io import AnnotateError, DuplicateNoteIdError, OutputCorruptError, OutputLockedError

__all__ = ["ScaleError", "DuplicateNoteIdError", "InputChangedError", "OutputCorruptError", "OutputLockedError",
           "VerificationError", "WorkerSetupError"]


class ScaleError(AnnotateError):
    """Base class: a problem with the input, the output folder or the cluster."""


class InputChangedError(ScaleError):
    """The output folder was started from a different input (or shard size)."""


class VerificationError(ScaleError):
    """The output does not hold exactly one record per input note."""


class WorkerSetupError(ScaleError):
    """A worker could not set itself up (GPU, threads, pipeline)."""
