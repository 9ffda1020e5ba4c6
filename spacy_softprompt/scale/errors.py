"""Errors of the sharded annotate job; none of them carries note text."""


class ScaleError(Exception):
    """Base class: a problem with the input, the output folder or the cluster."""


class DuplicateNoteIdError(ScaleError):
    """Two notes of the input share an id, so "exactly once" has no meaning."""


class InputChangedError(ScaleError):
    """The output folder was started from a different input (or shard size)."""


class VerificationError(ScaleError):
    """The output does not hold exactly one record per input note."""


class WorkerSetupError(ScaleError):
    """A worker could not set itself up (GPU, threads, pipeline)."""
