"""Config settings that change how inference is batched, and nothing that is trained.

A run's identity -- the study's recipe fingerprint (:mod:`spacy_softprompt.study.recipe`)
and a checkpoint's config fingerprint (:mod:`spacy_softprompt.checkpoint`) -- must
not change when only such a setting does: a longer ``max_batch_items`` of the
transformer pipe groups more notes into one backbone call at inference, with the
same predictions (the padding is masked) and the same training. Both fingerprints
hash these settings at one fixed value, spacy-transformers' default, so runs made
before a change of them keep their identity.
"""
import copy
from typing import Any, Dict, Mapping, Tuple

#: path in the config -> the value it is hashed at
INFERENCE_ONLY_SETTINGS: Dict[Tuple[str, ...], Any] = {
    ("components", "transformer", "max_batch_items"): 4096,
}


def with_inference_settings_fixed(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A deep copy of ``config`` (nested sections) with every :data:`INFERENCE_ONLY_SETTINGS`
    entry it has set to its fixed value; entries it lacks stay absent."""
    fixed = copy.deepcopy(dict(config))
    for path, value in INFERENCE_ONLY_SETTINGS.items():
        section: Any = fixed
        for name in path[:-1]:
            section = section.get(name) if isinstance(section, Mapping) else None
        if isinstance(section, dict) and path[-1] in section:
            section[path[-1]] = value
    return fixed
