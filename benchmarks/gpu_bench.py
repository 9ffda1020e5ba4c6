"""GPU path: where the time goes in the shipped GPU configs, against a bare forward.

One run, side by side, on one device (``--device cuda`` or ``--device cpu``):

* ``stages``: per-stage seconds per 10k words of ``nlp.pipe`` (spaCy
  tokenizer, span getter, wordpiece tokenization, alignment, backbone forward,
  rest of the transformer pipe (device->host copies, output conversion,
  ``set_annotations``), ``ner`` listener pooling and transition steps,
  relation candidates, pair pooling, classifier, ``set_annotations``), timed
  by wrapping each stage (CUDA is synchronised at every stage boundary);
* ``throughput`` (uninstrumented, interleaved, best of ``--repeats``):
  ``nlp.pipe(texts, batch_size)`` end to end, the transformer pipe alone on
  tokenized docs, and the bare Hugging Face forward of the same backbone over
  the same windows (wordpieces pre-built and on the device, rows sorted by
  length, ``--bare-rows`` per batch, autocast like the pipeline, ``no_grad``);
* ``train``: one fresh process per config (``soft`` unfrozen, ``soft-frozen``):
  ``nlp.update`` on ``--train-words`` words per step, s/step, peak memory
  (``torch.cuda.max_memory_allocated`` on CUDA, sampled RSS on CPU), per-stage
  split, and what a frozen step must not pay for (backbone gradients,
  optimizer state for backbone weights);
* ``precision`` (CUDA only): fp16 and bf16 autocast vs fp32 on the same
  pipeline and texts: entity spans and relations identical, max relative
  difference of the transformer output;
* ``--large``: the GatorTron-large shape (56 x 3584, 8.9B parameters) built in
  bf16 directly on the device (no weights on disk), frozen deep-prompt training
  step with gradient checkpointing, and ``nlp.pipe`` vs the bare forward.

Weights are random and heads untrained: only speed and memory mean anything.
Needs no network and no packaged backbone (the model is generated).
``--device cpu --layers 2 --hidden 128`` is a quick smoke run.
"""
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # the package from this checkout, installed or not
    sys.path.insert(1, str(HERE.parent))
import bench_common as bc  # noqa: E402

RESULTS = bc.RESULTS_DIR / "gpu.json"
CONFIGS = ("soft", "soft-frozen")
TARGETS = {
    "pipe_vs_bare": 0.5,
    "transformer_vs_bare": 0.8,
    "frozen_step_vs_unfrozen": 0.7,
    "frozen_peak_vs_unfrozen": 0.5,
    "span_agreement": 0.99,
}
#: GatorTron-large (8.9B): 56 layers, hidden 3584, 56 heads
LARGE_SHAPE = {"layers": 56, "hidden": 3584, "heads": 56}
STAGE_ORDER = (
    "spaCy tokenizer",
    "transformer: span getter",
    "transformer: wordpiece tokenization",
    "transformer: alignment",
    "transformer: backbone forward",
    "transformer: rest (host/device copies, output conversion, set_annotations)",
    "ner: listener pooling",
    "ner: transition steps + set_annotations",
    "relations: listener pooling",
    "relations: candidates",
    "relations: pair representation",
    "relations: classifier + host copy",
    "relations: set_annotations",
)


# ------------------------------------------------------------------ helpers
def _backbone(workdir: Path, layers: int, hidden: int) -> str:
    """A random MegatronBert, ``layers`` x ``hidden`` (GatorTron-base: 24 x 1024,
    16 heads, 50,176 embedding rows), whose WordPiece vocabulary holds the
    synthetic notes' words, so a word is about one wordpiece as with a real
    clinical vocabulary (with character pieces, 192-word windows would
    overflow the 512 positions and be truncated)."""
    import synthetic_notes

    from spacy_softprompt.testing import build_vocab, make_random_encoder

    path = Path(workdir) / f"gpu_megatron_L{layers}_H{hidden}_V50176"
    if not (path / "config.json").is_file():
        words = list(synthetic_notes.FILLER) + list(synthetic_notes.DRUGS)
        words += [w for _, text in synthetic_notes.ATTRS for w in text.split()]
        vocab = build_vocab(sorted(set(words)))
        make_random_encoder(path, "megatron-bert", num_layers=layers, hidden_size=hidden,
                            num_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                            max_position_embeddings=512, vocab=vocab, vocab_padding=50176 - len(vocab))
    return str(path)


def _register() -> None:
    """Register what the configs name without relying on installed entry points
    (a source checkout copied to a GPU machine need not be pip-installed)."""
    import spacy_softprompt.architectures  # noqa: F401
    import spacy_softprompt.heads.relation_extractor  # noqa: F401
    import spacy_softprompt.heads.relation_model  # noqa: F401
    import spacy_softprompt.data.tokenizer  # noqa: F401
    import spacy_softprompt.optimizers  # noqa: F401
    import spacy_softprompt.scoring  # noqa: F401


def _setup(spec) -> str:
    import torch

    _register()

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["device"] == "cuda":
        from thinc.api import set_gpu_allocator

        set_gpu_allocator("pytorch")
    return bc.use_device(spec["gpu_id"] if spec["device"] == "cuda" else -1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _build(spec, config: str, **model):
    """The shipped GPU config ``config`` on the generated backbone; mixed precision
    off on CPU (autocast is CUDA-only in thinc's shim)."""
    cfg_model = dict(model)
    if spec["device"] != "cuda":
        cfg_model["mixed_precision"] = False
    return bc.build_pipeline(spec["backbone"], config=f"{config}_gpu.cfg", window=spec["window"],
                             stride=spec["stride"], init_notes=bc.notes(4, 60, seed=100), **cfg_model)


class Stages:
    """Accumulates seconds per stage name; ``wrap`` times a callable."""

    def __init__(self, device: str, clock: str = "wall"):
        self.device = device
        # CPU time on a shared CPU (wall time there measures the other jobs too)
        self.now = time.perf_counter if clock == "wall" else time.process_time
        self.seconds: Dict[str, float] = {}
        self.stack: List[str] = []

    @contextmanager
    def timing(self, name: str):
        _sync(self.device)
        start = self.now()
        try:
            yield
        finally:
            _sync(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - start

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.timing(name):
                return fn(*args, **kwargs)

        return timed


@contextmanager
def instrumented(nlp, stages: Stages):
    """Wrap the stages of ``nlp``'s transformer, ner and relation_extractor;
    everything is restored on exit."""
    from spacy_softprompt.encoder import layer as layer_mod
    from spacy_softprompt.encoder.model import PromptedEncoder

    undo = []

    def patch(obj, attr, new):
        old, had = obj.__dict__.get(attr), attr in obj.__dict__
        setattr(obj, attr, new)
        undo.append((obj, attr, old, had))

    trf = nlp.get_pipe("transformer").model
    old_spans = trf.attrs["get_spans"]
    trf.attrs["get_spans"] = stages.wrap("transformer: span getter", old_spans)
    for fn in ("huggingface_tokenize",):
        patch(layer_mod, fn, stages.wrap("transformer: wordpiece tokenization", getattr(layer_mod, fn)))
    for fn in ("alignment_via_offset_mapping", "get_alignment", "truncate_oversize_splits"):
        patch(layer_mod, fn, stages.wrap("transformer: alignment", getattr(layer_mod, fn)))
    patch(PromptedEncoder, "forward", stages.wrap("transformer: backbone forward", PromptedEncoder.forward))
    funcs = []

    def wrap_node(node, name):
        funcs.append((node, node._func))
        node._func = stages.wrap(name, node._func)

    if "ner" in nlp.pipe_names:
        wrap_node(nlp.get_pipe("ner").model.get_ref("tok2vec"), "ner: listener pooling")
    if "relation_extractor" in nlp.pipe_names:
        rel = nlp.get_pipe("relation_extractor")
        wrap_node(rel.model.get_ref("tok2vec"), "relations: listener pooling")
        wrap_node(rel.model.layers[0], "relations: pair representation")
        patch(rel, "candidate_index", stages.wrap("relations: candidates", rel.candidate_index))
        patch(rel, "set_annotations", stages.wrap("relations: set_annotations", rel.set_annotations))
    try:
        yield
    finally:
        trf.attrs["get_spans"] = old_spans
        for node, func in funcs:
            node._func = func
        for obj, attr, old, had in reversed(undo):
            if had:
                setattr(obj, attr, old)
            else:
                delattr(obj, attr)


def profile_stages(nlp, texts: List[str], batch_size: int, device: str, clock: str = "wall") -> Dict[str, Any]:
    """Per-stage seconds of one pass over ``texts`` (stage by stage, component
    by component, as ``nlp.pipe`` does per batch)."""
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
    s["transformer: rest (host/device copies, output conversion, set_annotations)"] = max(
        0.0, totals.get("transformer", 0.0) - inner("transformer: "))
    if "ner" in totals:
        s["ner: transition steps + set_annotations"] = max(0.0, totals["ner"] - inner("ner: "))
    if "relation_extractor" in totals:
        pair = s.get("relations: pair representation", 0.0)
        # the pair representation includes the listener it calls
        s["relations: pair representation"] = max(0.0, pair - s.get("relations: listener pooling", 0.0))
        s["relations: classifier + host copy"] = max(0.0, totals["relation_extractor"] - inner("relations: "))
    n_words = sum(len(d) for d in docs)
    per_10k = {k: s[k] * 10_000 / n_words for k in STAGE_ORDER if k in s}
    return {
        "words": n_words,
        "seconds": {k: s[k] for k in STAGE_ORDER if k in s},
        "per_10k_words_s": per_10k,
        "total_s": sum(s.values()),
        "components_s": totals,
        "entities": sum(len(d.ents) for d in docs),
        "relations": sum(len(d._.relations) for d in docs),
    }


def bare_batches(nlp, docs, rows: int, device: str):
    """The pipeline's own windows as padded wordpiece batches on the device,
    sorted by length, ``rows`` rows each (tokenized here, outside the timing)."""
    import torch

    model = nlp.get_pipe("transformer").model
    tokenizer = model.tokenizer
    spans = [span for doc_spans in model.attrs["get_spans"](docs) for span in doc_spans]
    enc = tokenizer([s.text for s in spans], add_special_tokens=True, truncation=True,
                    max_length=model.max_text_length)
    ids = sorted(enc["input_ids"], key=len)
    batches = []
    for start in range(0, len(ids), rows):
        chunk = ids[start : start + rows]
        width = max(len(r) for r in chunk)
        input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, r in enumerate(chunk):
            input_ids[i, : len(r)] = torch.as_tensor(r)
            mask[i, : len(r)] = 1
        batches.append({"input_ids": input_ids.to(device), "attention_mask": mask.to(device)})
    return batches, len(spans), sum(len(r) for r in ids)


def compare_alignment(nlp, docs, bs: int, repeats: int) -> Dict[str, Any]:
    """CPU seconds per 10k words of spacy-transformers' offset-mapping alignment
    vs ours (``spacy_softprompt.encoder.align``) on the pipeline's own batches,
    interleaved, best of ``repeats``; and whether they agree."""
    import numpy
    from spacy_transformers.align import get_alignment_via_offset_mapping
    from spacy_transformers.layers.transformer_model import huggingface_tokenize

    from spacy_softprompt.encoder.align import alignment_via_offset_mapping

    model = nlp.get_pipe("transformer").model
    batches = []
    for start in range(0, len(docs), bs):
        spans = [s for doc_spans in model.attrs["get_spans"](docs[start : start + bs]) for s in doc_spans]
        batches.append((spans, huggingface_tokenize(model.tokenizer, [s.text for s in spans])["offset_mapping"]))
    fns = {"spacy-transformers": get_alignment_via_offset_mapping, "ours": alignment_via_offset_mapping}
    best = {name: float("inf") for name in fns}
    for rep in range(max(1, repeats)):
        for name in (list(fns) if rep % 2 == 0 else list(fns)[::-1]):
            c0 = time.process_time()
            for spans, offsets in batches:
                fns[name](spans, offsets)
            best[name] = min(best[name], time.process_time() - c0)
    same = all(
        numpy.array_equal(a.dataXd, b.dataXd) and numpy.array_equal(a.lengths, b.lengths)
        for a, b in ((fns["ours"](sp, om), fns["spacy-transformers"](sp, om)) for sp, om in batches)
    )
    n_words = sum(len(d) for d in docs)
    return {"cpu_s_per_10k_words": {k: v * 10_000 / n_words for k, v in best.items()},
            "speedup": best["spacy-transformers"] / max(best["ours"], 1e-9), "identical": same}


def _loop_candidates(rel, entities):
    """The relation extractor's candidate scan before it used array operations
    (a Python loop over neighbouring entity pairs), kept here to time against."""
    allowed = {tuple(p) for ps in rel.cfg["allowed_pairs"].values() for p in ps}
    max_dist = rel.cfg["max_token_distance"]
    ents = sorted(entities, key=lambda s: (s.start, s.end, s.label_))
    pairs = []
    for i, a in enumerate(ents):
        for b in ents[i + 1 :]:
            if max_dist is not None and b.start - a.end > max_dist:
                break
            if a.start == b.start and a.end == b.end and a.label_ == b.label_:
                continue
            if (a.label_, b.label_) in allowed:
                pairs.append((a, b))
            if (b.label_, a.label_) in allowed:
                pairs.append((b, a))
    arr = numpy_pairs(pairs)
    return pairs, arr


def numpy_pairs(pairs):
    import numpy

    arr = numpy.zeros((len(pairs), 4), dtype="i")
    for i, (a, b) in enumerate(pairs):
        arr[i] = (a.start, a.end, b.start, b.end)
    return arr


def compare_candidates(nlp, texts, repeats: int) -> Dict[str, Any]:
    """Relation candidates + their offset arrays on notes with realistic given
    entities (a drug and three attributes every ~25 words): the loop scan vs
    ``RelationExtractor.candidate_index``; CPU s per 10k words, best of repeats."""
    import numpy

    if "relation_extractor" not in nlp.pipe_names:
        return {}
    rel = nlp.get_pipe("relation_extractor")
    docs = bc.docs_with_entities(nlp, bc.notes(len(texts), max(1, sum(len(t.split()) for t in texts) // len(texts)), seed=0))
    ents = [list(d.spans["entities"]) for d in docs]

    def ours():
        out = []
        for e in ents:
            sorted_ents, index = rel.candidate_index(e)
            out.append(rel._index_pair_array(sorted_ents, index))
        return out

    def loop():
        return [_loop_candidates(rel, e)[1] for e in ents]

    fns = {"loop (before)": loop, "arrays (now)": ours}
    best = {k: float("inf") for k in fns}
    for rep in range(max(1, repeats)):
        for name in (list(fns) if rep % 2 == 0 else list(fns)[::-1]):
            c0 = time.process_time()
            fns[name]()
            best[name] = min(best[name], time.process_time() - c0)
    same = all(numpy.array_equal(a, b) for a, b in zip(loop(), ours()))
    n_words = sum(len(d) for d in docs)
    return {"entities": sum(map(len, ents)), "pairs": int(sum(len(a) for a in ours())),
            "cpu_s_per_10k_words": {k: v * 10_000 / n_words for k, v in best.items()},
            "speedup": best["loop (before)"] / max(best["arrays (now)"], 1e-9), "identical": same}


def _loop_accept(rel, pairs, scores):
    """The per-pair accept rule of ``set_annotations`` before it used arrays."""
    from spacy_softprompt.annotations import make_relation

    out, labels = [], rel.labels
    for (a, b), row in zip(pairs, scores):
        best = int(row[1:].argmax()) + 1
        if row[best] >= rel.cfg["threshold"] and row[best] > row[0]:
            label = labels[best - 1]
            if [a.label_, b.label_] in rel.cfg["allowed_pairs"].get(label, []):
                out.append(make_relation(label, a, b, score=row[best]))
    return out


def dense_relations(nlp, words: int = 2000, max_dist: int = 100, repeats: int = 2) -> Dict[str, Any]:
    """What an over-predicting ``ner`` costs the relation extractor outside its
    network: an entity on every token (allowed label pairs alternating) and a
    distance limit of ``max_dist`` tokens; candidates, offset arrays and the
    accept rule, per-pair loops (before) vs array operations (now), CPU s per
    10k words, same random scores."""
    import numpy

    if "relation_extractor" not in nlp.pipe_names:
        return {}
    rel = nlp.get_pipe("relation_extractor")
    pairs_allowed = [tuple(p) for ps in rel.cfg["allowed_pairs"].values() for p in ps]
    if not pairs_allowed:
        return {}
    first, second = pairs_allowed[0]
    doc = nlp.make_doc(" ".join(["word"] * words))
    ents = [doc[i : i + 1] for i in range(len(doc))]
    for i, span in enumerate(ents):
        span.label_ = first if i % 2 else second
    saved = rel.cfg["max_token_distance"]
    rel.cfg["max_token_distance"] = max_dist
    try:
        n_pairs = len(rel.candidate_index(ents)[1])
        scores = numpy.random.RandomState(0).dirichlet(numpy.ones(len(rel.labels) + 1), size=n_pairs).astype("f")

        def loop():
            pairs, _ = _loop_candidates(rel, ents)
            return _loop_accept(rel, pairs, scores)

        def arrays():
            found = rel.candidate_index(ents)
            rel._index_pair_array(*found)
            rel.set_annotations([doc], ([found], scores))
            return doc._.relations

        fns = {"loop (before)": loop, "arrays (now)": arrays}
        best = {k: float("inf") for k in fns}
        for rep in range(max(1, repeats)):
            for name in (list(fns) if rep % 2 == 0 else list(fns)[::-1]):
                c0 = time.process_time()
                fns[name]()
                best[name] = min(best[name], time.process_time() - c0)
        same = loop() == arrays()
    finally:
        rel.cfg["max_token_distance"] = saved
    return {"words": len(doc), "entities": len(ents), "pairs": n_pairs, "max_token_distance": max_dist,
            "cpu_s_per_10k_words": {k: v * 10_000 / len(doc) for k, v in best.items()},
            "speedup": best["loop (before)"] / max(best["arrays (now)"], 1e-9), "identical": same}


def _autocast(device: str, dtype):
    import contextlib

    import torch

    if device.startswith("cuda") and dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ workers
def worker_infer(spec) -> Dict[str, Any]:
    """Stage profile, throughput and (CUDA) precision agreement for one config."""
    import torch

    from spacy_softprompt.encoder.model import AUTOCAST_DTYPES

    device = _setup(spec)
    t0 = time.perf_counter()
    nlp = _build(spec, spec["config"])
    build_s = time.perf_counter() - t0
    texts = [t for t, _, _ in bc.notes(spec["docs"], spec["words"], seed=0)]
    trf_pipe = nlp.get_pipe("transformer")
    encoder = trf_pipe.model.encoder
    shim = trf_pipe.model.shim
    mixed = bool(shim._mixed_precision)
    dtype = AUTOCAST_DTYPES[encoder.autocast_dtype] if (mixed and device.startswith("cuda")) else None
    bs = spec["batch_size"]
    # warm-up (CUDA context, cuBLAS, cupy kernels), then the stage profile
    t0 = time.perf_counter()
    list(nlp.pipe(texts[: max(1, bs // 4)], batch_size=bs))
    _sync(device)
    first_call_s = time.perf_counter() - t0
    stages = profile_stages(nlp, texts, bs, device, spec["clock"])

    docs = list(nlp.tokenizer.pipe(texts))
    n_words = sum(len(d) for d in docs)
    batches, n_windows, n_pieces = bare_batches(nlp, docs, spec["bare_rows"], device)
    backbone = encoder.backbone

    def bare():
        with torch.no_grad(), _autocast(device, dtype):
            for inputs in batches:
                backbone(**inputs)
        _sync(device)

    def full():
        list(nlp.pipe(texts, batch_size=bs))
        _sync(device)

    def trf_only():
        list(trf_pipe.pipe(docs, batch_size=bs))
        _sync(device)

    alignment = compare_alignment(nlp, docs, bs, spec["repeats"])
    candidates = compare_candidates(nlp, texts, spec["repeats"])
    dense = dense_relations(nlp, repeats=spec["repeats"])
    runners = {"pipe": full, "transformer": trf_only, "bare forward": bare}
    for run in runners.values():
        run()
    names = list(runners)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    peak = {}
    for rep in range(spec["repeats"]):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            c0, w0 = time.process_time(), time.perf_counter()
            runners[name]()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            if device.startswith("cuda"):
                peak[name] = max(peak.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20)
    clock = spec["clock"]
    best = {n: min(wall[n] if clock == "wall" else cpu[n]) for n in names}
    throughput = {
        n: {"words_per_s": n_words / best[n], "best_s": best[n], "runs_wall_s": wall[n], "runs_cpu_s": cpu[n],
            **({"peak_gpu_mb": peak[n]} if n in peak else {})}
        for n in names
    }
    ratios = {
        "pipe_vs_bare": best["bare forward"] / best["pipe"],
        "transformer_vs_bare": best["bare forward"] / best["transformer"],
    }
    result = {
        "config": spec["config"], "device": device, "mixed_precision": mixed,
        "autocast_dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "build_s": build_s, "first_call_s": first_call_s, "words": n_words, "docs": len(texts),
        "windows": n_windows, "wordpieces": n_pieces, "stages": stages, "throughput": throughput,
        "ratios": ratios, "alignment": alignment, "candidates": candidates, "dense_relations": dense, "clock": clock, "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        result["precision"] = precision_agreement(nlp, texts[: spec["agreement_docs"]], bs)
    else:
        result["precision"] = {"skipped": "autocast is CUDA-only; run with --device cuda"}
    return result


def _annotations(docs):
    ents = [sorted((e.start, e.end, e.label_) for e in d.ents) for d in docs]
    rels = [sorted((r["label"], tuple(r["arg1"]), tuple(r["arg2"])) for r in d._.relations) for d in docs]
    return ents, rels


def _agreement(a, b) -> float:
    both = sum(len(set(x) & set(y)) for x, y in zip(a, b))
    either = sum(len(set(x) | set(y)) for x, y in zip(a, b))
    return 1.0 if either == 0 else both / either


def precision_agreement(nlp, texts: List[str], bs: int) -> Dict[str, Any]:
    """fp32 vs fp16/bf16 autocast on the same pipeline: spans, relations and the
    transformer output (max |diff| / max |fp32|)."""
    import torch

    trf = nlp.get_pipe("transformer").model
    shim, encoder = trf.shim, trf.encoder
    saved = (shim._mixed_precision, encoder.autocast_dtype)
    out: Dict[str, Any] = {"docs": len(texts)}

    def run(mixed, dtype):
        shim._mixed_precision, encoder.autocast_dtype = mixed, dtype
        docs = list(nlp.pipe(texts, batch_size=bs))
        hidden = [d._.trf_data.model_output.last_hidden_state for d in docs]
        hidden = [h.get() if hasattr(h, "get") else h for h in hidden]
        return docs, hidden

    try:
        ref_docs, ref_hidden = run(False, saved[1])
        ref_ents, ref_rels = _annotations(ref_docs)
        out["fp32"] = {"entities": sum(map(len, ref_ents)), "relations": sum(map(len, ref_rels))}
        for name in ("float16", "bfloat16"):
            if name == "bfloat16" and not torch.cuda.is_bf16_supported():
                out[name] = {"skipped": "no bf16 on this GPU"}
                continue
            docs, hidden = run(True, name)
            ents, rels = _annotations(docs)
            scale = max(float(abs(h).max()) for h in ref_hidden) or 1.0
            diff = max(float(abs(h - r).max()) for h, r in zip(hidden, ref_hidden))
            out[name] = {
                "entity_agreement": _agreement(ents, ref_ents),
                "relation_agreement": _agreement(rels, ref_rels),
                "docs_identical": sum(e == r for e, r in zip(ents, ref_ents)) / max(1, len(ents)),
                "hidden_max_rel_diff": diff / scale,
            }
    finally:
        shim._mixed_precision, encoder.autocast_dtype = saved
    return out


def split_step(nlp, egs, optimizer, stages: Stages) -> None:
    """One training step as ``nlp.update`` does it (every component's ``update``,
    then every ``finish_update``), with the stages timed."""
    import torch

    from spacy_softprompt.encoder.model import PromptedEncoder

    patches = [(PromptedEncoder, "forward", PromptedEncoder.forward), (torch.autograd, "backward", torch.autograd.backward)]
    PromptedEncoder.forward = stages.wrap("  backbone forward", PromptedEncoder.forward)
    torch.autograd.backward = stages.wrap("  backbone backward", torch.autograd.backward)
    try:
        losses: Dict[str, float] = {}
        for name, proc in nlp.pipeline:
            with stages.timing(f"{name} update"):
                proc.update(egs, drop=0.1, sgd=None, losses=losses)
        for name, proc in nlp.pipeline:
            with stages.timing(f"{name} optimizer step"):
                proc.finish_update(optimizer)
    finally:
        for obj, attr, old in patches:
            setattr(obj, attr, old)


def frozen_checks(nlp, optimizer) -> Dict[str, Any]:
    """What a step left behind on the backbone: gradients, optimizer state."""
    from spacy_softprompt.optimizers import is_head_key, is_prompt_key

    trf = nlp.get_pipe("transformer").model
    encoder, shim = trf.encoder, trf.shim
    backbone_params = list(encoder.backbone.parameters())
    keys = set()
    for table in (optimizer.mom1, optimizer.mom2, optimizer.averages or {}):
        keys.update(table)
    backbone_state = [k for k in keys if isinstance(k, tuple) and k[0] == shim.id and not is_prompt_key(k)
                      and not is_head_key(k)]
    prompt_state = [k for k in keys if isinstance(k, tuple) and k[0] == shim.id and is_prompt_key(k)]
    return {
        "backbone_params": len(backbone_params),
        "backbone_requires_grad": sum(p.requires_grad for p in backbone_params),
        "backbone_grads": sum(p.grad is not None for p in backbone_params),
        "backbone_optimizer_entries": len(backbone_state),
        "prompt_optimizer_entries": len(prompt_state),
        "backbone_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in backbone_params}),
        "trainable_share": encoder.num_trainable_parameters() / max(1, sum(p.numel() for p in encoder.parameters())),
    }


def worker_train(spec) -> Dict[str, Any]:
    """s/step, peak memory and stage split of ``nlp.update`` for one config."""
    import torch
    from spacy.util import registry

    device = _setup(spec)
    overrides = {"gradient_checkpointing": True} if spec.get("checkpointing") else {}
    nlp = _build(spec, spec["config"], **overrides)
    cfg = bc.pipeline_config(spec["backbone"], config=f"{spec['config']}_gpu.cfg")
    optimizer = registry.resolve({"o": cfg["training"]["optimizer"]})["o"]
    words = spec["words"]
    n_notes = max(1, spec["train_words"] // words)
    egs = bc.examples(nlp, bc.notes(n_notes, words, seed=7))
    step_words = sum(len(eg.reference) for eg in egs)

    def step():
        nlp.update(egs, sgd=optimizer, drop=0.1)
        _sync(device)

    with bc.peak_memory(device) as first:
        step()  # warm-up; optimizer state is created here
    times, cpu_times = [], []
    stages = Stages(device, spec["clock"])
    with bc.peak_memory(device) as mem:
        for _ in range(spec["train_steps"]):
            c0, t0 = time.process_time(), time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    split_step(nlp, egs, optimizer, stages)
    result = {
        "config": spec["config"], "device": device, "step_words": step_words, "notes_per_step": n_notes,
        "s_per_step": min(times), "cpu_s_per_step": min(cpu_times), "runs_s": times,
        "peak_mb": max(first.get("peak_mb", 0.0), mem.get("peak_mb", 0.0)), "memory": {"first_step": first, "steps": mem},
        "stages_s": stages.seconds, "checks": frozen_checks(nlp, optimizer),
        "gradient_checkpointing": bool(spec.get("checkpointing")),
    }
    return result


def worker_large(spec) -> Dict[str, Any]:
    """GatorTron-large shape, bf16, built on the device: frozen deep-prompt step
    with gradient checkpointing, then ``nlp.pipe`` vs the bare forward."""
    import torch
    from spacy.util import registry

    from spacy_softprompt.encoder import backbone as backbone_mod

    device = _setup(spec)
    dev = torch.device(device)
    shape = spec["large_shape"]
    folder = Path(spec["workdir"]) / f"large_L{shape['layers']}_H{shape['hidden']}_config_only"
    if not (folder / "config.json").is_file():
        _config_only_folder(folder, shape)

    def from_config(source, transformer_config, device_):
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(source, return_dict=True)
        with torch.device(dev):
            model = AutoModel.from_config(config, torch_dtype=torch.bfloat16)
        return model.eval()

    # random weights built on the device in bf16; the SHA-256 of 18 GB of random
    # weights (a prompt-only safety check) is not what this measures
    backbone_mod._from_pretrained = from_config
    backbone_mod.backbone_checksum = lambda module: "random-large-shape"
    spec = dict(spec, backbone=str(folder))
    t0 = time.perf_counter()
    nlp = _build(spec, "soft-frozen", gradient_checkpointing=True, mixed_precision_dtype="bfloat16")
    build_s = time.perf_counter() - t0
    encoder = nlp.get_pipe("transformer").model.encoder
    n_params = sum(p.numel() for p in encoder.backbone.parameters())
    cfg = bc.pipeline_config(spec["backbone"], config="soft-frozen_gpu.cfg")
    optimizer = registry.resolve({"o": cfg["training"]["optimizer"]})["o"]
    egs = bc.examples(nlp, bc.notes(max(1, spec["train_words"] // spec["words"]), spec["words"], seed=7))
    with bc.peak_memory(device) as first:
        nlp.update(egs, sgd=optimizer, drop=0.1)
        _sync(device)
    with bc.peak_memory(device) as mem:
        t0 = time.perf_counter()
        nlp.update(egs, sgd=optimizer, drop=0.1)
        _sync(device)
        step_s = time.perf_counter() - t0
    texts = [t for t, _, _ in bc.notes(spec["docs"], spec["words"], seed=0)]
    docs = list(nlp.tokenizer.pipe(texts))
    n_words = sum(len(d) for d in docs)
    batches, n_windows, _ = bare_batches(nlp, docs, spec["bare_rows"], device)
    list(nlp.pipe(texts[:2]))
    with bc.peak_memory(device) as pipe_mem:
        t0 = time.perf_counter()
        list(nlp.pipe(texts, batch_size=spec["batch_size"]))
        _sync(device)
        pipe_s = time.perf_counter() - t0
    with bc.peak_memory(device) as bare_mem:
        t0 = time.perf_counter()
        with torch.no_grad(), _autocast(device, torch.bfloat16):
            for inputs in batches:
                encoder.backbone(**inputs)
        _sync(device)
        bare_s = time.perf_counter() - t0
    return {
        "shape": shape, "parameters": n_params, "dtype": str(next(encoder.backbone.parameters()).dtype),
        "device": device, "build_s": build_s, "train_step_s": step_s, "train_words": sum(len(e.reference) for e in egs),
        "train_peak_mb": max(first.get("peak_mb", 0), mem.get("peak_mb", 0)),
        "checks": frozen_checks(nlp, optimizer), "pipe_words_per_s": n_words / pipe_s,
        "bare_words_per_s": n_words / bare_s, "pipe_vs_bare": bare_s / pipe_s, "pipe_peak_mb": pipe_mem.get("peak_mb"),
        "bare_peak_mb": bare_mem.get("peak_mb"), "words": n_words, "windows": n_windows,
    }


def _config_only_folder(folder: Path, shape: Dict[str, int]) -> None:
    """config.json + WordPiece tokenizer, no weights (built on the device later)."""
    from transformers import BertTokenizerFast, MegatronBertConfig

    from spacy_softprompt.testing import build_vocab

    folder.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf8")
    MegatronBertConfig(
        vocab_size=50176, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], intermediate_size=4 * shape["hidden"], max_position_embeddings=512,
        type_vocab_size=2,
    ).save_pretrained(folder)
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)


WORKERS = {"infer": worker_infer, "train": worker_train, "large": worker_large}


# ------------------------------------------------------------------ main
def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}g}"


def main(argv=None) -> int:
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--gpu-id", type=int, default=0)
    parser.add_argument("--layers", type=int, default=24, help="depth of the GatorTron-base-shaped model")
    parser.add_argument("--hidden", type=int, default=1024, help="width (1024 = GatorTron-base; smaller for smoke runs)")
    parser.add_argument("--backbone", default=None,
                        help="use this backbone (folder or package: name, e.g. minilm) instead of the generated one")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="shipped GPU configs (soft, soft-frozen)")
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--words", type=int, default=400, help="words per note")
    parser.add_argument("--batch-size", type=int, default=32, help="nlp.pipe batch size")
    parser.add_argument("--bare-rows", type=int, default=64, help="rows per batch of the bare forward")
    parser.add_argument("--window", type=int, default=192)
    parser.add_argument("--stride", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None, help="default: wall on CUDA, cpu on CPU")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--train-words", type=int, default=4000, help="words per training step")
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--agreement-docs", type=int, default=16)
    parser.add_argument("--large", action="store_true", help="also the GatorTron-large shape (bf16, on the device)")
    parser.add_argument("--large-layers", type=int, default=LARGE_SHAPE["layers"])
    parser.add_argument("--large-hidden", type=int, default=LARGE_SHAPE["hidden"])
    parser.add_argument("--large-heads", type=int, default=LARGE_SHAPE["heads"])
    parser.add_argument("--timeout", type=float, default=None, help="seconds per worker process")
    parser.add_argument("--workdir", type=Path, default=bc.DEFAULT_WORKDIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if bc.serve_worker(args, WORKERS):
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --device cpu")
    clock = args.clock or ("wall" if args.device == "cuda" else "cpu")
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.backbone:
        backbone = bc.MINILM if args.backbone == "minilm" else args.backbone
        label = args.backbone
    else:
        backbone = _backbone(args.workdir, args.layers, args.hidden)
        label = f"MegatronBert {args.layers}x{args.hidden}" + (
            " (GatorTron-base shape)" if args.hidden == 1024 and args.layers == 24 else "")
    bc.log(f"{label}: ready in {time.perf_counter() - t0:.0f}s")
    base = {
        "device": args.device, "gpu_id": args.gpu_id, "backbone": backbone, "threads": args.threads,
        "docs": args.docs, "words": args.words, "batch_size": args.batch_size, "bare_rows": args.bare_rows,
        "window": args.window, "stride": args.stride, "repeats": args.repeats, "clock": clock,
        "train_words": args.train_words, "train_steps": args.train_steps, "agreement_docs": args.agreement_docs,
        "workdir": str(args.workdir),
    }
    report = bc.new_report("gpu", args, backbone={"label": label, "layers": args.layers, "hidden": args.hidden},
                           inference={}, train={}, large=None)
    script = Path(__file__).resolve()
    configs = bc.csv(args.configs)
    for config in configs:
        bc.log(f"inference: {config}")
        report["inference"][config] = bc.run_worker(script, "infer", dict(base, config=config), timeout=args.timeout)
    if not args.no_train:
        for config in configs:
            bc.log(f"train: {config}")
            report["train"][config] = bc.run_worker(script, "train", dict(base, config=config), timeout=args.timeout)
    if args.large:
        shape = {"layers": args.large_layers, "hidden": args.large_hidden, "heads": args.large_heads}
        bc.log(f"large: {shape}")
        report["large"] = bc.run_worker(script, "large", dict(base, large_shape=shape), timeout=args.timeout)
    _print(report, configs)
    _targets(report, configs)
    return bc.finish(report, args.output)


def _print(report, configs) -> None:
    inf = report["inference"]
    print(f"\n## Per-stage time per 10k words ({report['backbone']['label']}, {report['settings']['device']})\n")
    rows = []
    for stage in STAGE_ORDER:
        cells = [inf[c]["stages"]["per_10k_words_s"].get(stage) for c in configs]
        if any(v is not None for v in cells):
            rows.append([stage] + [_fmt(v) for v in cells])
    rows.append(["total"] + [_fmt(sum(inf[c]["stages"]["per_10k_words_s"].values())) for c in configs])
    bc.print_table(["stage (s / 10k words)"] + configs, rows)
    print("\n## Throughput (words/s, best of repeats, interleaved)\n")
    rows = []
    for c in configs:
        t = inf[c]["throughput"]
        rows.append([c, _fmt(t["pipe"]["words_per_s"], 4), _fmt(t["transformer"]["words_per_s"], 4),
                     _fmt(t["bare forward"]["words_per_s"], 4), f"{inf[c]['ratios']['pipe_vs_bare']:.2f}",
                     f"{inf[c]['ratios']['transformer_vs_bare']:.2f}",
                     _fmt(t["pipe"].get("peak_gpu_mb"), 5)])
    bc.print_table(["config", "nlp.pipe", "transformer only", "bare forward", "pipe / bare", "transformer / bare",
                    "peak GPU MB (pipe)"], rows)
    print("\n## Alignment (CPU s per 10k words, same batches, best of repeats)\n")
    bc.print_table(["config", "spacy-transformers", "ours", "speedup", "identical"], [
        [c, _fmt(inf[c]["alignment"]["cpu_s_per_10k_words"]["spacy-transformers"]),
         _fmt(inf[c]["alignment"]["cpu_s_per_10k_words"]["ours"]), f"{inf[c]['alignment']['speedup']:.1f}x",
         inf[c]["alignment"]["identical"]] for c in configs])
    if all(inf[c].get("candidates") for c in configs):
        print("\n## Relation candidates + offset arrays (given entities; CPU s per 10k words)\n")
        bc.print_table(["config", "entities", "pairs", "loop (before)", "arrays (now)", "speedup", "identical"], [
            [c, inf[c]["candidates"]["entities"], inf[c]["candidates"]["pairs"],
             _fmt(inf[c]["candidates"]["cpu_s_per_10k_words"]["loop (before)"]),
             _fmt(inf[c]["candidates"]["cpu_s_per_10k_words"]["arrays (now)"]),
             f"{inf[c]['candidates']['speedup']:.1f}x", inf[c]["candidates"]["identical"]] for c in configs])
    if all(inf[c].get("dense_relations") for c in configs):
        print("\n## Over-predicting ner: an entity on every token (candidates + arrays + accept rule; CPU s per 10k words)\n")
        bc.print_table(["config", "entities", "pairs", "loop (before)", "arrays (now)", "speedup", "identical"], [
            [c, inf[c]["dense_relations"]["entities"], inf[c]["dense_relations"]["pairs"],
             _fmt(inf[c]["dense_relations"]["cpu_s_per_10k_words"]["loop (before)"]),
             _fmt(inf[c]["dense_relations"]["cpu_s_per_10k_words"]["arrays (now)"]),
             f"{inf[c]['dense_relations']['speedup']:.1f}x", inf[c]["dense_relations"]["identical"]] for c in configs])
    if report["train"]:
        print("\n## Training step\n")
        rows = []
        for c, t in report["train"].items():
            ch = t["checks"]
            rows.append([c, f"{t['s_per_step']:.3f}", f"{t['peak_mb']:.0f}", t["step_words"], ch["backbone_grads"],
                         ch["backbone_optimizer_entries"], f"{100 * ch['trainable_share']:.2f}%"])
        bc.print_table(["config", "s/step", "peak MB", "words/step", "backbone grads", "backbone optimizer entries",
                        "trainable"], rows)
    for c in configs:
        prec = inf[c].get("precision", {})
        if "skipped" in prec:
            print(f"\nprecision ({c}): skipped: {prec['skipped']}")
        else:
            print(f"\nprecision ({c}): " + json.dumps({k: v for k, v in prec.items()}, default=str))
    if report.get("large"):
        print("\n## GatorTron-large shape\n" + json.dumps(report["large"], indent=1, default=str))


def _targets(report, configs) -> None:
    targets = report["targets"]
    for c in configs:
        r = report["inference"][c]["ratios"]
        targets[f"{c}: nlp.pipe / bare forward"] = bc.target_entry(r["pipe_vs_bare"], TARGETS["pipe_vs_bare"], True)
        targets[f"{c}: transformer / bare forward"] = bc.target_entry(
            r["transformer_vs_bare"], TARGETS["transformer_vs_bare"], True)
        prec = report["inference"][c].get("precision", {})
        for dtype in ("float16", "bfloat16"):
            if isinstance(prec.get(dtype), dict) and "entity_agreement" in prec[dtype]:
                targets[f"{c}: {dtype} vs fp32 entity agreement"] = bc.target_entry(
                    prec[dtype]["entity_agreement"], TARGETS["span_agreement"], True, unit="")
    train = report["train"]
    if "soft" in train and "soft-frozen" in train:
        u, f = train["soft"], train["soft-frozen"]
        targets["train step frozen / unfrozen"] = bc.target_entry(
            f["s_per_step"] / u["s_per_step"], TARGETS["frozen_step_vs_unfrozen"], False)
        targets["peak memory frozen / unfrozen"] = bc.target_entry(
            f["peak_mb"] / u["peak_mb"], TARGETS["frozen_peak_vs_unfrozen"], False,
            note=train["soft"]["memory"]["steps"].get("kind", ""))


if __name__ == "__main__":
    sys.exit(main())
