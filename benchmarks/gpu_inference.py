"""Inference on one device: the default pipeline in one process and in N worker
processes sharing the device, against the bare forward of its backbone.

* ``stages``: :func:`gpu_stages.profile_stages` (per-stage time, host work);
* ``throughput`` (interleaved, best of ``repeats``): ``nlp.pipe`` end to end,
  the transformer pipe alone on tokenized docs, and the backbone's bare
  forward over the pipeline's own windows (:func:`window_batches`: wordpieces
  pre-built and on the device, rows sorted by length, autocast like the
  pipeline, no gradients);
* ``workers``: ``parallel.WorkerPool(nlp, N, gpu_id)`` (what ``annotate
  --n-process N --gpu-id G`` runs): N spawned processes, each with its own copy
  of the pipeline on the device, fed chunks of notes; words/s after a warm-up pass;
* ``pipe overlapped`` (what ``annotate --overlap`` runs): the next batch's
  transformer in a background thread while this one runs the heads, beside
  ``nlp.pipe`` on the same ``overlap_docs`` notes (the notes repeated);
* ``precision`` (CUDA only): fp16 and bf16 autocast vs fp32 on the same texts;
  ``precision_trained``: the same after ``agreement_train_steps`` training steps
  (:func:`train_for_agreement`: untrained heads sit near ties that rounding decides).
"""
import time
from typing import Any, Dict, List, Optional, Tuple

import bench_common as bc
import gpu_setup
import gpu_stages
import pipeline_timing
from spacy_softprompt.overlap import pipe_overlapped


def window_batches(nlp, docs, rows: int, device: str) -> Tuple[list, int, int]:
    """The pipeline's own windows as padded wordpiece batches on the device,
    sorted by length, ``rows`` rows each; and the numbers of windows and wordpieces."""
    model = nlp.get_pipe("transformer").model
    spans = [span for doc_spans in model.attrs["get_spans"](docs) for span in doc_spans]
    enc = model.tokenizer([s.text for s in spans], add_special_tokens=True, truncation=True,
                          max_length=model.max_text_length)
    ids = sorted(enc["input_ids"], key=len)
    return pipeline_timing.padded_batches(ids, rows, device), len(spans), sum(len(r) for r in ids)


def _autocast(device: str, dtype):
    import contextlib

    import torch

    if device.startswith("cuda") and dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def pipe_chunk(nlp, chunk: List[Tuple[str, str]]) -> List[Tuple[str, None, None]]:
    """Worker-side: annotate a chunk, return no documents (only the work is measured)."""
    list(nlp.pipe([text for _, text in chunk]))
    bc.synchronize("cuda")
    return [(doc_id, None, None) for doc_id, _ in chunk]


def workers_throughput(nlp, texts: List[str], n_process: int, gpu_id: int, batch_size: int) -> Dict[str, Any]:
    """words/s of ``n_process`` spawned workers sharing ``gpu_id`` (-1: CPU),
    after one warm-up pass (process start, model load, CUDA context)."""
    from spacy_softprompt.parallel import WorkerPool

    # Each worker gets chunks of ``batch_size`` notes, as ``annotate --n-process N --batch-size B`` gives it,
    # and at least four of them: the notes are repeated until there are 4 * n_process full chunks (smaller
    # chunks make launch-bound backbone calls on a GPU, and too little timed work); best of two timed passes.
    size = max(1, batch_size)
    repeat = max(1, -(-4 * n_process * size // max(1, len(texts))))
    texts = list(texts) * repeat
    words = sum(len(doc) for doc in nlp.tokenizer.pipe(texts))
    items = [(str(i), text) for i, text in enumerate(texts)]
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with WorkerPool(nlp, n_process, gpu_id=gpu_id) as pool:
        start = time.perf_counter()
        for _ in pool.map(pipe_chunk, chunks):
            pass
        warm_up_s = time.perf_counter() - start
        runs = []
        for _ in range(2):
            start = time.perf_counter()
            for _ in pool.map(pipe_chunk, chunks):
                pass
            runs.append(time.perf_counter() - start)
        run_s = min(runs)
        devices = sorted({device for _, _, device, _ in pool.worker_info()})
    return {"n_process": n_process, "words_per_s": words / run_s, "run_s": run_s, "runs_s": runs, "warm_up_s": warm_up_s,
            "chunk_docs": size, "docs": len(items), "worker_devices": devices, "threads_per_worker": pool.threads}


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
        return docs, [h.get() if hasattr(h, "get") else h for h in hidden]

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


def train_for_agreement(nlp, spec: Dict[str, Any], steps: int, device: str) -> Dict[str, Any]:
    """Train the pipeline ``steps`` steps (Adam 1e-3, 8 synthetic notes per step, notes the
    agreement texts are not) so that its heads decide with a trained model's margins: an
    untrained head keeps many tokens near a tie between tags, where rounding decides.
    Returns the losses of the first and last steps and the steps' count."""
    from thinc.api import Adam

    if steps <= 0:
        return {"steps": 0}
    optimizer = Adam(1e-3)
    egs = bc.examples(nlp, bc.notes(32, spec["words"], seed=11))
    first: Dict[str, float] = {}
    last: Dict[str, float] = {}
    start = time.perf_counter()
    for step in range(steps):
        batch = [egs[(step * 8 + i) % len(egs)] for i in range(8)]
        losses: Dict[str, float] = {}
        nlp.update(batch, sgd=optimizer, drop=0.1, losses=losses)
        if step == 0:
            first = dict(losses)
        last = dict(losses)
    bc.synchronize(device)
    return {"steps": steps, "loss_first": first, "loss_last": last, "seconds": time.perf_counter() - start}


def worker_infer(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Stage profile, throughput (one process and N workers) and precision for one config."""
    import torch

    from spacy_softprompt.encoder.model import AUTOCAST_DTYPES

    device = gpu_setup.setup(spec)
    start = time.perf_counter()
    nlp = gpu_setup.build(spec, spec["config"])
    build_s = time.perf_counter() - start
    notes = bc.notes(spec["docs"], spec["words"], seed=0)
    texts = [t for t, _, _ in notes]
    # untrained heads tag nearly every token, which inflates
    # decoding, set_annotations and the relation candidates: set the share of entity tokens to the notes'
    # own, as `bench speed` does on real notes
    calibration = pipeline_timing.calibrate_entity_rate(nlp, bc.docs_with_entities(nlp, notes))
    trf_pipe = nlp.get_pipe("transformer")
    encoder = trf_pipe.model.encoder
    mixed = bool(trf_pipe.model.shim._mixed_precision)
    dtype = AUTOCAST_DTYPES[encoder.autocast_dtype] if (mixed and device.startswith("cuda")) else None
    bs = spec["batch_size"]
    start = time.perf_counter()  # warm-up (CUDA context, cuBLAS, kernels)
    warm = list(nlp.pipe(texts[: max(1, bs // 4)], batch_size=bs))
    bc.synchronize(device)
    calibration["entities_predicted"] = sum(len(doc.ents) for doc in warm)
    calibration["entities_gold"] = sum(len(ents) for _, ents, _ in notes[: len(warm)])
    first_call_s = time.perf_counter() - start
    stages = gpu_stages.profile_stages(nlp, texts, bs, device, spec["clock"])

    docs = list(nlp.tokenizer.pipe(texts))
    n_words = sum(len(d) for d in docs)
    batches, n_windows, n_pieces = window_batches(nlp, docs, spec["bare_rows"], device)
    backbone = encoder.backbone

    def bare():
        backbone.eval()
        with torch.no_grad(), _autocast(device, dtype):
            for inputs in batches:
                backbone(**inputs)
        bc.synchronize(device)

    def full():
        list(nlp.pipe(texts, batch_size=bs))
        bc.synchronize(device)

    def trf_only():
        list(trf_pipe.pipe(docs, batch_size=bs))
        bc.synchronize(device)

    # one process with the next batch's transformer in a background thread (annotate --overlap), beside
    # nlp.pipe on the same notes: enough batches that the first front and the last back weigh little
    many = [texts[i % len(texts)] for i in range(max(len(texts), spec.get("overlap_docs", 0)))]
    many_words = sum(len(d) for d in nlp.tokenizer.pipe(many))

    def full_many():
        list(nlp.pipe(many, batch_size=bs))
        bc.synchronize(device)

    def overlapped():
        list(pipe_overlapped(nlp, many, batch_size=bs))
        bc.synchronize(device)

    runners = {"pipe": full, "transformer": trf_only, "bare forward": bare,
               "pipe (overlap notes)": full_many, "pipe overlapped": overlapped}
    words_of = {"pipe (overlap notes)": many_words, "pipe overlapped": many_words}
    for run in runners.values():
        run()
    names = list(runners)
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    peak: Dict[str, float] = {}
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
        n: {"words_per_s": words_of.get(n, n_words) / best[n], "best_s": best[n], "runs_wall_s": wall[n], "runs_cpu_s": cpu[n],
            **({"peak_gpu_mb": peak[n]} if n in peak else {})}
        for n in names
    }
    workers: Optional[Dict[str, Any]] = None
    if spec.get("workers", 0) >= 2:
        gpu_id = spec["gpu_id"] if device.startswith("cuda") else -1
        workers = workers_throughput(nlp, texts, spec["workers"], gpu_id, bs)
    ratios = {
        "pipe_vs_bare": best["bare forward"] / best["pipe"],
        "transformer_vs_bare": best["bare forward"] / best["transformer"],
        "workers_vs_bare": None if workers is None else workers["words_per_s"] / throughput["bare forward"]["words_per_s"],
        "overlapped_vs_bare": throughput["pipe overlapped"]["words_per_s"] / throughput["bare forward"]["words_per_s"],
        "overlapped_vs_pipe": best["pipe (overlap notes)"] / best["pipe overlapped"],
    }
    result = {
        "config": spec["config"], "device": device, "mixed_precision": mixed,
        "autocast_dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "build_s": build_s, "first_call_s": first_call_s, "words": n_words, "docs": len(texts),
        "windows": n_windows, "wordpieces": n_pieces, "stages": stages, "throughput": throughput,
        "workers": workers, "ratios": ratios, "clock": clock, "torch_threads": torch.get_num_threads(),
        "calibration": calibration,
    }
    if device.startswith("cuda"):
        result["precision"] = precision_agreement(nlp, texts[: spec["agreement_docs"]], bs)
    else:
        result["precision"] = {"skipped": "autocast is CUDA-only; run with --device cuda"}
    # the same agreement once the heads are trained (last: it changes the pipeline)
    steps = spec.get("agreement_train_steps", 0)
    if steps > 0:
        training = train_for_agreement(nlp, spec, steps, device)
        if device.startswith("cuda"):
            result["precision_trained"] = {"training": training, **precision_agreement(nlp, texts[: spec["agreement_docs"]], bs)}
        else:
            result["precision_trained"] = {"training": training, "skipped": "autocast is CUDA-only; run with --device cuda"}
    return result
