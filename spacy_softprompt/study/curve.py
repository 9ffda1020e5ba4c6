"""The dev-score curve of a training run and whether the run converged.

:func:`curve_logger` wraps the config's training logger (console output
unchanged) and writes every evaluation -- step, dev score, entity and relation
strict F1, seconds since the start, the process's peak memory so far -- to a
JSON file as training goes, so a killed run still leaves its curve. :func:`convergence` reads such a curve.

A run resumed from a checkpoint (:mod:`spacy_softprompt.training_loop`) keeps
the points of its curve file before its first new evaluation; a fresh run's
first evaluation is step 0, so it starts the file again.

Convergence rule: a run is **converged** when its best dev score did not
improve by ``min_gain`` (0.5 F1 points) or more over the last ``tail`` (a
quarter) of its schedule, i.e. ``best(all evaluations) - best(evaluations at
steps <= (1 - tail) * last step) < min_gain``. The schedule's end is the last
evaluated step (the configured ``max_steps``, or earlier when early stopping
ended the run). A curve with no evaluation before the last quarter cannot say
(``converged`` is None).
"""
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

CURVE_KEYS = ("ents_strict_f", "rels_strict_f")
MIN_GAIN = 0.005
TAIL = 0.25
LOGGER_NAME = "spacy_softprompt.study.CurveLogger.v1"


def convergence(curve: Sequence[Dict[str, Any]], *, min_gain: float = MIN_GAIN, tail: float = TAIL) -> Dict[str, Any]:
    """``{"converged", "best_step", "best_score", "late_gain", "cutoff_step", "last_step"}``
    of a curve (a list of ``{"step", "score"}``); ``converged`` is None when it cannot be told."""
    points = sorted((int(p["step"]), float(p["score"])) for p in curve if p.get("score") is not None)
    if not points:
        return {"converged": None, "best_step": None, "best_score": None, "late_gain": None, "cutoff_step": None, "last_step": None}
    last_step = points[-1][0]
    cutoff = (1.0 - tail) * last_step
    best_step, best_score = max(points, key=lambda p: (p[1], -p[0]))
    early = [score for step, score in points if step <= cutoff]
    late_gain = best_score - max(early) if early and last_step > 0 else None
    return {
        "converged": None if late_gain is None else bool(late_gain < min_gain),
        "best_step": best_step,
        "best_score": best_score,
        "late_gain": late_gain,
        "cutoff_step": int(cutoff),
        "last_step": last_step,
    }


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory so far, in MB (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf8")
    os.replace(tmp, path)


def curve_logger(path: str, inner: Callable) -> Callable:
    """A spaCy training logger: ``inner``'s (the config's own logger) plus the curve in ``path``."""

    def setup(nlp, stdout, stderr):
        log_inner, finalize_inner = inner(nlp, stdout, stderr)
        points: Optional[List[Dict[str, Any]]] = None
        target = Path(path)

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            nonlocal points
            log_inner(info)
            if info is None:
                return
            step = int(info["step"])
            if points is None:  # a resumed run keeps the evaluations before its own
                points = [p for p in read_curve(target) if int(p.get("step", -1)) < step]
            point: Dict[str, Any] = {"step": step, "score": float(info.get("score") or 0.0)}
            if info.get("seconds") is not None:
                point["seconds"] = float(info["seconds"])
            peak = peak_rss_mb()
            if peak is not None:  # so that a resumed run's peak covers its earlier sittings
                point["peak_mb"] = peak
            other = info.get("other_scores") or {}
            for key in CURVE_KEYS:
                if isinstance(other.get(key), (int, float)):
                    point[key] = float(other[key])
            points.append(point)
            _write_json(target, points)

        return log_step, finalize_inner

    return setup


def register() -> None:
    """Register :func:`curve_logger` with spaCy (idempotent)."""
    from spacy.util import registry

    if LOGGER_NAME not in registry.loggers.get_all():
        registry.loggers.register(LOGGER_NAME, func=curve_logger)


def record_curve(nlp, path: Path) -> None:
    """Make ``spacy.training.loop.train(nlp)`` write its dev curve to ``path``
    (the config's own logger keeps logging)."""
    register()
    training = nlp.config["training"]
    training["logger"] = {"@loggers": LOGGER_NAME, "path": str(path), "inner": dict(training["logger"])}


def read_curve(path: Path) -> List[Dict[str, Any]]:
    """The curve a run wrote ([] when it wrote none)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []
