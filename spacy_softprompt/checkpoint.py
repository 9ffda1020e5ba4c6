"""A training run's resumable state, written after every dev evaluation.

``<output>/checkpoint/`` holds what spaCy's ``model-last`` does not: the
optimizer's moments and per-parameter update counts, the random generators'
states (Python, NumPy, torch), the training-loop position (step, evaluations so
far, words seen, seconds) and a fingerprint of the config. With the pipeline's
weights (``model/``, written by ``nlp.to_disk``) that is everything a killed
run needs to go on where its last evaluation left it.

Optimizer keys are ``(node or shim id, parameter name)``; ids are counters of
the process, so they are stored as the node's place in its component's model
(``component/index`` in ``model.walk()`` order, ``/shim<j>`` for a torch shim)
and mapped back onto the new process's ids. Arrays go to ``.npy`` files read
with ``allow_pickle=False``; everything else is JSON: nothing is unpickled.

The folder is written under a temporary name and renamed into place, so a
kill while writing leaves the previous checkpoint whole.
"""
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy

CHECKPOINT_DIR = "checkpoint"
FORMAT_VERSION = 1
_STATE = "state.json"
_MODEL = "model"
_ARRAYS = "arrays"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed (another config, another pipeline, a torn write)."""


#: ``[training]`` settings a resumed run may change: they decide when training stops
#: or what it logs, never what a step does, so a checkpoint at step N is the same
#: whichever value the run had (early stopping cannot have fired before a checkpoint
#: the run went on to write)
UNTRAINED_TRAINING_KEYS = ("logger", "patience")


#: what fingerprints written before ``patience`` joined :data:`UNTRAINED_TRAINING_KEYS` left out
_EARLIER_UNTRAINED_KEYS = ("logger",)


def config_fingerprint(config, *, untrained: Sequence[str] = UNTRAINED_TRAINING_KEYS) -> str:
    """SHA-256 of the interpolated config's text without the ``[training]`` settings in
    ``untrained`` (logger, patience) and with the inference-only settings at fixed values
    (:mod:`spacy_softprompt.config_identity`)."""
    from thinc.api import Config

    from .config_identity import with_inference_settings_fixed

    data = Config(with_inference_settings_fixed(Config(config).interpolate()))
    for key in untrained:
        data.get("training", {}).pop(key, None)
    return hashlib.sha256(data.to_str().encode("utf8")).hexdigest()


def _earlier_form_matches(folder: Path, stored: str, fingerprint: str) -> bool:
    """Whether a checkpoint fingerprinted the earlier way (patience included) was written
    by a config that is ``fingerprint``'s up to patience: its own saved config must give
    the stored value the earlier way and ``fingerprint`` the current way."""
    from spacy.util import load_config

    path = folder / _MODEL / "config.cfg"
    if not path.is_file():
        return False
    saved = load_config(path)
    return config_fingerprint(saved, untrained=_EARLIER_UNTRAINED_KEYS) == stored and config_fingerprint(saved) == fingerprint


def parameter_places(nlp) -> Dict[Hashable, str]:
    """``node or shim id -> stable place`` for every trainable component's model."""
    places: Dict[Hashable, str] = {}
    for name, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if model in (None, True, False) or not hasattr(model, "walk"):
            continue
        for index, node in enumerate(model.walk()):
            places.setdefault(node.id, f"{name}/{index}")
            for j, shim in enumerate(node.shims):
                places.setdefault(shim.id, f"{name}/{index}/shim{j}")
    return places


def _stable_key(key, places: Dict[Hashable, str]) -> str:
    owner, param = key
    if owner not in places:
        raise CheckpointError(f"optimizer key {key!r} belongs to no component of the pipeline")
    return f"{places[owner]}::{param}"


def _rng_states() -> Tuple[Dict[str, Any], Dict[str, numpy.ndarray]]:
    kind, keys, pos, has_gauss, cached = numpy.random.get_state()
    info = {
        "python": python_random_state(),
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    arrays = {"rng.numpy.keys": numpy.asarray(keys)}
    try:
        import torch

        arrays["rng.torch"] = torch.get_rng_state().numpy()
        if torch.cuda.is_available():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                arrays[f"rng.torch.cuda{i}"] = state.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info, arrays


def python_random_state() -> List[Any]:
    """``random.getstate()`` as JSON-ready lists."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_python_random_state(state: List[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def _set_rng_states(info: Dict[str, Any], arrays: Dict[str, numpy.ndarray]) -> None:
    set_python_random_state(info["python"])
    n = info["numpy"]
    numpy.random.set_state((n["kind"], arrays["rng.numpy.keys"], n["pos"], n["has_gauss"], n["cached_gaussian"]))
    import torch

    if "rng.torch" in arrays:
        torch.set_rng_state(torch.from_numpy(arrays["rng.torch"].copy()))
    cuda = sorted(k for k in arrays if k.startswith("rng.torch.cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(arrays[k].copy()) for k in cuda])


def _host(array) -> numpy.ndarray:
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


def save_checkpoint(output_path: Path, nlp, optimizer, progress: Dict[str, Any], fingerprint: str) -> Path:
    """Write ``output_path/checkpoint`` (replacing the previous one) and return it.
    ``progress``: the loop's JSON-ready position (step, evaluations, ...)."""
    if getattr(optimizer, "averages", None):
        raise CheckpointError("parameter averages (use_averages = true) are not checkpointed")
    if getattr(optimizer, "use_radam", False):
        raise CheckpointError("RAdam's buffers are not checkpointed")
    final = Path(output_path) / CHECKPOINT_DIR
    tmp = final.with_name(f"{CHECKPOINT_DIR}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / _ARRAYS).mkdir(parents=True)
    nlp.to_disk(tmp / _MODEL)
    places = parameter_places(nlp)
    moments: List[Dict[str, Any]] = []
    for i, key in enumerate(sorted(optimizer.mom1, key=lambda k: _stable_key(k, places))):
        entry = {"key": _stable_key(key, places), "updates": int(optimizer.nr_update[key]), "file": f"m{i}"}
        numpy.save(tmp / _ARRAYS / f"m{i}.mom1.npy", _host(optimizer.mom1[key]), allow_pickle=False)
        if key in optimizer.mom2:
            numpy.save(tmp / _ARRAYS / f"m{i}.mom2.npy", _host(optimizer.mom2[key]), allow_pickle=False)
        moments.append(entry)
    rng_info, rng_arrays = _rng_states()
    for name, array in rng_arrays.items():
        numpy.save(tmp / _ARRAYS / f"{name}.npy", array, allow_pickle=False)
    state = {
        "format": FORMAT_VERSION,
        "config": fingerprint,
        "progress": progress,
        "optimizer": {"moments": moments},
        "rng": rng_info,
    }
    (tmp / _STATE).write_text(json.dumps(state), encoding="utf8")
    old = final.with_name(f"{CHECKPOINT_DIR}.{os.getpid()}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(output_path: Path, fingerprint: str) -> Optional[Dict[str, Any]]:
    """The checkpoint's state, or ``None`` when ``output_path`` has none. A checkpoint
    of another config, or one without its model, raises :class:`CheckpointError`."""
    folder = Path(output_path) / CHECKPOINT_DIR
    path = folder / _STATE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf8"))
    except ValueError as error:
        raise CheckpointError(f"{path}: not a checkpoint ({error})") from None
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')!r}, this version reads {FORMAT_VERSION}")
    if state.get("config") != fingerprint and not _earlier_form_matches(folder, str(state.get("config")), fingerprint):
        raise CheckpointError(
            f"{folder} was written by a run of another config; resume with the same config and "
            "overrides, or train into another output folder"
        )
    if not (folder / _MODEL / "config.cfg").is_file():
        raise CheckpointError(f"{folder}: the pipeline's weights are missing")
    state["folder"] = str(folder)
    return state


def restore_checkpoint(state: Dict[str, Any], nlp, optimizer) -> None:
    """Load the weights and the optimizer's moments of ``state`` (from
    :func:`read_checkpoint`) into ``nlp`` and ``optimizer``."""
    from thinc.api import get_current_ops

    folder = Path(state["folder"])
    nlp.from_disk(folder / _MODEL)
    ids = {place: owner for owner, place in parameter_places(nlp).items()}
    ops = get_current_ops()
    for entry in state["optimizer"]["moments"]:
        place, _, param = entry["key"].partition("::")
        if place not in ids:
            raise CheckpointError(f"{folder}: the checkpoint's parameter {entry['key']} has no place in this pipeline")
        key = (ids[place], param)
        mom1 = numpy.load(folder / _ARRAYS / f"{entry['file']}.mom1.npy", allow_pickle=False)
        mom2_path = folder / _ARRAYS / f"{entry['file']}.mom2.npy"
        optimizer.mom1[key] = ops.asarray(mom1)
        if mom2_path.is_file():
            optimizer.mom2[key] = ops.asarray(numpy.load(mom2_path, allow_pickle=False))
        optimizer.nr_update[key] = int(entry["updates"])


def restore_random_states(state: Dict[str, Any]) -> None:
    """Put the Python, NumPy and torch generators where the checkpoint found them."""
    folder = Path(state["folder"]) / _ARRAYS
    arrays = {path.name[: -len(".npy")]: numpy.load(path, allow_pickle=False) for path in folder.glob("rng.*.npy")}
    _set_rng_states(state["rng"], arrays)


def remove_checkpoint(output_path: Path) -> None:
    """Drop ``output_path/checkpoint`` (a finished run needs none)."""
    shutil.rmtree(Path(output_path) / CHECKPOINT_DIR, ignore_errors=True)
