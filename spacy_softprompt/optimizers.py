"""Optimizers with a separate learning rate for prompt parameters.

Prompts want a much larger learning rate (1e-3 .. 3e-2) than a backbone
(1e-5 .. 5e-5).  thinc calls its optimizer once per parameter with a key
``(node_or_shim_id, param_name)``; for torch modules the name is the
``named_parameters()`` name, and every prompt parameter's name contains the
segment ``prompt_encoder`` (see ``spacy_softprompt.encoder``).
:class:`PromptOptimizer` is a thinc ``Optimizer`` (same schedules,
``step_schedules``, ``averages``, ``learn_rate``...) that uses
``prompt_learn_rate`` (and optionally ``prompt_L2``) for those keys.

Heads (thinc layers such as ``ner`` or ``relation_extractor``) learn far from
their initialisation and want a larger rate than a pretrained backbone:
``head_learn_rate`` applies to thinc-native parameters, whose keys name a
parameter of a thinc node (``"W"``, ``"b"``...), never a dotted torch
``named_parameters()`` name. Left as ``None`` they use ``learn_rate``.
"""
from typing import Optional, Tuple, cast

from spacy.util import registry
from thinc.optimizers import ADAM_DEFAULTS, FloatOrSeq, Optimizer
from thinc.types import FloatsXd

from .encoder.model import PROMPT_MODULE_NAME


def is_head_key(key) -> bool:
    """True for thinc-native parameters (head layers), False for torch ones."""
    return isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], str) and "." not in key[1]


def is_prompt_key(key) -> bool:
    """True for optimizer keys of prompt parameters."""
    if not isinstance(key, tuple) or len(key) != 2 or not isinstance(key[1], str):
        return False
    return PROMPT_MODULE_NAME in key[1].split(".")


class PromptOptimizer(Optimizer):
    """thinc ``Optimizer`` with parameter groups: prompts vs everything else."""

    __slots__ = ["prompt_learn_rate", "prompt_L2", "head_learn_rate", "last_score"]

    def __init__(
        self,
        learn_rate: FloatOrSeq,
        *,
        prompt_learn_rate: FloatOrSeq,
        prompt_L2: Optional[FloatOrSeq] = None,
        head_learn_rate: Optional[FloatOrSeq] = None,
        **kwargs,
    ):
        super().__init__(learn_rate, **kwargs)
        if head_learn_rate is None:
            self.head_learn_rate = None
        else:
            self._set_attr_or_schedule("head_learn_rate", head_learn_rate)
        self._set_attr_or_schedule("prompt_learn_rate", prompt_learn_rate)
        if prompt_L2 is None:
            self.prompt_L2 = None
        else:
            self._set_attr_or_schedule("prompt_L2", prompt_L2)
        self.last_score = None

    def __call__(self, key: Tuple[int, str], weights: FloatsXd, gradient: FloatsXd, *, lr_scale: float = 1.0):
        learn_rate, L2 = self.learn_rate, self.L2
        if is_prompt_key(key):
            self.learn_rate = self.prompt_learn_rate
            if self.prompt_L2 is not None:
                self.L2 = self.prompt_L2
        elif self.head_learn_rate is not None and is_head_key(key):
            self.learn_rate = self.head_learn_rate
        else:
            return super().__call__(key, weights, gradient, lr_scale=lr_scale)
        try:
            return super().__call__(key, weights, gradient, lr_scale=lr_scale)
        finally:
            self.learn_rate, self.L2 = learn_rate, L2


@registry.optimizers("spacy_softprompt.PromptAdam.v1")
def PromptAdam(
    learn_rate: FloatOrSeq = 2e-5,
    prompt_learn_rate: FloatOrSeq = 1e-2,
    *,
    L2: FloatOrSeq = ADAM_DEFAULTS["L2"],
    prompt_L2: Optional[FloatOrSeq] = None,
    head_learn_rate: Optional[FloatOrSeq] = None,
    beta1: FloatOrSeq = ADAM_DEFAULTS["beta1"],
    beta2: FloatOrSeq = ADAM_DEFAULTS["beta2"],
    eps: FloatOrSeq = ADAM_DEFAULTS["eps"],
    grad_clip: FloatOrSeq = ADAM_DEFAULTS["grad_clip"],
    L2_is_weight_decay: bool = cast(bool, ADAM_DEFAULTS["L2_is_weight_decay"]),
    use_averages: bool = True,
) -> PromptOptimizer:
    """Adam (AdamW with ``L2_is_weight_decay``) with ``prompt_learn_rate`` for
    prompt parameters, ``head_learn_rate`` for thinc head layers (``None``: as
    ``learn_rate``) and ``learn_rate`` for the rest (the backbone). All rates
    accept schedules; ``prompt_L2`` defaults to ``L2``."""
    return PromptOptimizer(
        learn_rate,
        prompt_learn_rate=prompt_learn_rate,
        prompt_L2=prompt_L2,
        head_learn_rate=head_learn_rate,
        L2=L2,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        grad_clip=grad_clip,
        L2_is_weight_decay=L2_is_weight_decay,
        use_averages=use_averages,
        use_radam=False,
    )
