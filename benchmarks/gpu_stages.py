"""Per-stage time of the default pipeline's ``nlp.pipe`` (token_ner + relations).

:func:`profile_stages` runs the stages one after the other over all texts
(spaCy tokenizer, then each component as ``nlp.pipe`` runs it) with each
inner stage wrapped by :func:`instrumented`; on CUDA every stage boundary is
synchronised, so a stage's time includes the device work it queued.  Every
stage except ``transformer: backbone forward`` is host work: what N CPU
workers share out when they feed one GPU.
"""
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List

import bench_common as bc

FORWARD = "transformer: backbone forward"
STAGE_ORDER = (
    "spaCy tokenizer",
    "transformer: span getter",
    "transformer: wordpiece tokenization",
    "transformer: alignment",
    FORWARD,
    "transformer: rest (host/device copies, output split, set_annotations)",
    "token_ner: listener pooling",
    "token_ner: tag scores",
    "token_ner: Viterbi decoding",
    "token_ner: set_annotations",
    "relations: listener pooling (shared with token_ner)",
    "relations: candidates",
    "relations: pair representation",
    "relations: classifier + host copy",
    "relations: set_annotations",
)


class Stages:
    """Accumulates seconds per stage name; ``timing`` / ``wrap`` time a block or a callable."""

    def __init__(self, device: str, clock: str = "wall"):
        self.device = device
        # CPU time on a shared CPU (wall time there measures the other jobs too)
        self.now = time.perf_counter if clock == "wall" else time.process_time
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        bc.synchronize(self.device)
        start = self.now()
        try:
            yield
        finally:
            bc.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - start

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.timing(name):
                return fn(*args, **kwargs)

        return timed


@contextmanager
def instrumented(nlp, stages: Stages) -> Iterator[None]:
    """Wrap the inner stages of the transformer, ``token_ner`` and
    ``relation_extractor`` of ``nlp``; everything is restored on exit."""
    from spacy_softprompt.encoder import layer as layer_mod
    from spacy_softprompt.encoder.model import PromptedEncoder

    undo: List[tuple] = []

    def patch(obj, attr, new):
        had = attr in obj.__dict__
        undo.append((obj, attr, obj.__dict__.get(attr), had))
        setattr(obj, attr, new)

    def wrap_node(node, name):
        undo.append((node, "_func", node._func, True))
        node._func = stages.wrap(name, node._func)

    trf = nlp.get_pipe("transformer").model
    old_spans = trf.attrs["get_spans"]
    trf.attrs["get_spans"] = stages.wrap("transformer: span getter", old_spans)
    patch(layer_mod, "wordpiece_batch", stages.wrap("transformer: wordpiece tokenization", layer_mod.wordpiece_batch))
    for fn in ("alignment_via_offset_mapping", "get_alignment", "truncate_oversize_splits"):
        patch(layer_mod, fn, stages.wrap("transformer: alignment", getattr(layer_mod, fn)))
    patch(PromptedEncoder, "forward", stages.wrap(FORWARD, PromptedEncoder.forward))
    if "token_ner" in nlp.pipe_names:
        ner = nlp.get_pipe("token_ner")
        wrap_node(ner.model.get_ref("tok2vec"), "token_ner: listener pooling")
        patch(ner, "decode", stages.wrap("token_ner: Viterbi decoding", ner.decode))
        patch(ner, "set_annotations", stages.wrap("token_ner: set_annotations", ner.set_annotations))
    if "relation_extractor" in nlp.pipe_names:
        rel = nlp.get_pipe("relation_extractor")
        wrap_node(rel.model.get_ref("tok2vec"), "relations: listener pooling (shared with token_ner)")
        wrap_node(rel.model.layers[0], "relations: pair representation")
        patch(rel, "candidate_index", stages.wrap("relations: candidates", rel.candidate_index))
        patch(rel, "set_annotations", stages.wrap("relations: set_annotations", rel.set_annotations))
    try:
        yield
    finally:
        trf.attrs["get_spans"] = old_spans
        for obj, attr, old, had in reversed(undo):
            if had:
                setattr(obj, attr, old)
            else:
                delattr(obj, attr)


def profile_stages(nlp, texts: List[str], batch_size: int, device: str, clock: str = "wall") -> Dict[str, Any]:
    """Per-stage seconds (and per 10k words) of one pass over ``texts``; ``host_s_per_10k_words``
    is everything but the backbone forward."""
    stages = Stages(device, clock)
    with instrumented(nlp, stages):
        with stages.timing("spaCy tokenizer"):
            docs = list(nlp.tokenizer.pipe(texts, batch_size=batch_size))
        totals = {}
        for name, proc in nlp.pipeline:
            with stages.timing(f"component {name}"):
                docs = list(proc.pipe(docs, batch_size=batch_size))
            totals[name] = stages.seconds.pop(f"component {name}")
    s = stages.seconds
    inner = lambda prefix: sum(v for k, v in s.items() if k.startswith(prefix))  # noqa: E731
    s["transformer: rest (host/device copies, output split, set_annotations)"] = max(
        0.0, totals.get("transformer", 0.0) - inner("transformer: "))
    if "token_ner" in totals:
        s["token_ner: tag scores"] = max(0.0, totals["token_ner"] - inner("token_ner: "))
    if "relation_extractor" in totals:
        pooling = s.get("relations: listener pooling (shared with token_ner)", 0.0)
        # the pair representation includes the listener it calls
        s["relations: pair representation"] = max(0.0, s.get("relations: pair representation", 0.0) - pooling)
        s["relations: classifier + host copy"] = max(0.0, totals["relation_extractor"] - inner("relations: "))
    n_words = sum(len(d) for d in docs)
    per_10k = {k: s[k] * 10_000 / max(1, n_words) for k in STAGE_ORDER if k in s}
    return {
        "words": n_words,
        "seconds": {k: s[k] for k in STAGE_ORDER if k in s},
        "per_10k_words_s": per_10k,
        "host_s_per_10k_words": sum(v for k, v in per_10k.items() if k != FORWARD),
        "components_s": totals,
        "entities": sum(len(d.ents) for d in docs),
        "relations": sum(len(d._.relations) for d in docs),
    }
