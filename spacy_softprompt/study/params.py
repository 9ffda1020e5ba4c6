"""Trainable and total parameters of a spaCy pipeline, torch and thinc alike.

Every component's thinc model is walked once; thinc parameters (the NER and
relation heads) count as trainable unless the component is in
``[training] frozen_components``; torch modules behind shims (the prompted
encoder of the ``transformer`` pipe, the MRC span modules) count each
``torch.nn.Parameter`` once -- a frozen backbone shared by ``mrc_ner`` and
``mrc_relations`` is one module -- and are trainable when ``requires_grad``.
For the transformer pipe this agrees with ``PromptedEncoder.num_trainable_parameters()``
plus the heads.
"""
from typing import Dict


def count_parameters(nlp) -> Dict[str, int]:
    """``{"trainable_params", "total_params", "torch_params", "thinc_params"}``."""
    from thinc.api import Model

    try:
        frozen_components = set(nlp.config["training"].get("frozen_components") or [])
    except Exception:  # pragma: no cover - a pipeline without a training block
        frozen_components = set()
    seen_nodes, seen_shims, seen_params = set(), set(), set()
    trainable = total = torch_total = thinc_total = 0
    for name, component in nlp.components:
        model = getattr(component, "model", None)
        if not isinstance(model, Model):
            continue
        component_frozen = name in frozen_components
        for node in model.walk():
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            for param_name in node.param_names:
                if not node.has_param(param_name):
                    continue
                size = int(node.get_param(param_name).size)
                total += size
                thinc_total += size
                if not component_frozen:
                    trainable += size
            for shim in node.shims:
                if id(shim) in seen_shims:
                    continue
                seen_shims.add(id(shim))
                module = getattr(shim, "_model", None)
                parameters = getattr(module, "parameters", None)
                if not callable(parameters):
                    continue
                for param in parameters():
                    if id(param) in seen_params:
                        continue
                    seen_params.add(id(param))
                    size = int(param.numel())
                    total += size
                    torch_total += size
                    if param.requires_grad and not component_frozen:
                        trainable += size
    return {
        "trainable_params": trainable,
        "total_params": total,
        "torch_params": torch_total,
        "thinc_params": thinc_total,
    }
