"""CPU speed of the default pipeline: words/s against a bare forward of its own
backbone over the same text, and the host work per word, stage by stage.

The pipeline is the one the main job trains (``configs/tok_soft_cpu.cfg``: MiniLM,
deep soft prompts P=20, windows 128 / stride 112, ``token_ner`` +
``relation_extractor``), initialised on 5 dev documents with its ``O`` bias
calibrated to the gold entity share (``pipeline_timing.calibrate_entity_rate``),
or a trained pipeline (``--model``).  Text: the maccrobat2020 dev notes.

* **ratio**: ``nlp.pipe`` over the notes vs the backbone's bare forward over
  the same notes in non-overlapping windows of 128 wordpieces (no prompt,
  tokenisation excluded), interleaved (A B, B A, ...), medians of
  ``--repeats`` runs each, CPU time of this process (``--threads 1``: exact)
  and wall time.  The bare forward's windows per call matter on a CPU (small
  calls keep the activations in cache), so each of ``--bare-rows`` is timed
  first and the fastest is the floor the pipeline is compared with.
* **host**: CPU seconds per 10k words outside the backbone's forward, one core:
  spaCy tokenizer; transformer (span windows, wordpieces, alignment, length
  chunks, output split); each head (pooling, scoring, decoding, doc
  assembly); medians over ``--repeats`` runs.

``--old-forward`` runs the encoder as before the length chunks (rows in order,
padded to the longest row of the batch), for the before/after figures.
``--window-sweep 96,128,160,192`` times the bare forward over the same text in
windows of each length (wordpieces; about 2,048 positions per call),
interleaved, and reports CPU microseconds per position: on a CPU a position
of a longer window costs more, and the pipeline's windows (128 spaCy tokens)
hold more wordpieces than the bare forward's 128.
``--prompt-sweep 0,5,20`` times the bare forward over the same windows (``--bare-window``,
about 2,048 positions per call) with a deep prompt of each length passed as the
encoder passes it (``past_key_values``; the pipeline's own prompt at its length),
interleaved: what attending to P more keys per layer costs.
``--unaligned-keys`` adds a runner, interleaved with the others: the pipeline without
the CPU key alignment of deep prompts (``inference_key_alignment``; same predictions).
``--old-batching`` adds a third runner, interleaved with the two: the pipeline
as it batched inference before (spacy-transformers' 4,096
``max_batch_items``, no position budget per backbone call).
``--window/--stride`` override the span windows and ``--sentence-windows`` swaps
them for ``spacy_softprompt.sentence_windows.v1`` (non-overlapping windows of
whole sentences, ``--window`` tokens at most, 128 by default); both change
predictions, so the accuracy must be re-checked by training.
``--malloc retain`` (the default, as ``annotate``) keeps freed memory in the process
(:mod:`spacy_softprompt.memory`); ``--malloc default`` measures glibc's own behaviour.

Run: ``python -m spacy_softprompt bench speed [--model PATH] [--repeats 5] [--threads 1]``;
writes ``benchmarks/results/speed.json``.
"""
import resource
import sys
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402
import pipeline_timing as pt  # noqa: E402

RESULTS = bc.RESULTS_DIR / "speed.json"
OLD_BATCHING = "pipeline, old batching (max_batch_items 4,096, no position budget)"
UNALIGNED_KEYS = "pipeline, deep prompt keys not aligned (inference_key_alignment 0)"
TARGET_RATIO = 0.85
TARGET_HOST_S = 0.06


def _use_old_forward(nlp) -> None:
    encoder = nlp.get_pipe("transformer").model.encoder
    encoder.forward = encoder._forward_in_row_chunks


def _use_sentence_windows(nlp, window: int) -> dict:
    from spacy_softprompt.encoder.windows import configure_sentence_windows

    nlp.get_pipe("transformer").model.attrs["get_spans"] = configure_sentence_windows(window)
    return {"@span_getters": "spacy_softprompt.sentence_windows.v1", "window": window}


def _old_batching(nlp, runner):
    """``runner`` with the transformer pipe's sub-batches and the encoder's chunks as before
    the position budget: 4,096 padded spaCy tokens per predict call, no position budget per chunk."""
    pipe = nlp.get_pipe("transformer")

    def run():
        with mock.patch.dict(pipe.cfg, max_batch_items=4096), \
                mock.patch.object(pipe.model.encoder, "inference_chunk_positions", 0):
            return runner()

    return run


def _unaligned_keys(nlp, runner):
    """``runner`` with the encoder's deep prompt keys left as they are (no masked zero keys up
    to a multiple of 16 with the window)."""
    encoder = nlp.get_pipe("transformer").model.encoder

    def run():
        with mock.patch.object(encoder, "inference_key_alignment", 0):
            return runner()

    return run


def _window_sweep(nlp, texts, widths, repeats: int) -> dict:
    """``{window: {rows_per_call, positions, median_cpu_s, us_per_position}}``: the bare
    forward over ``texts`` in windows of each length, about 2,048 positions per call, interleaved."""
    if not widths:
        return {}
    bc.log(f"the bare forward by window length {widths}, {repeats} rounds ...")
    backbone = pt.backbone_of(nlp)
    runners, shapes = {}, {}
    for width in widths:
        rows = max(1, round(2048 / width))
        batches, counts = pt.bare_batches(nlp, texts, window=width, rows=rows)
        runners[str(width)] = pt.bare_forward(backbone, batches)
        runners[str(width)]()  # warm-up
        shapes[str(width)] = (rows, counts["wordpieces_padded"])
    runs = pt.interleaved(runners, repeats)
    out = {}
    for width, values in runs.items():
        cpu = pt.median([c for c, _ in values])
        rows, positions = shapes[width]
        out[width] = {"rows_per_call": rows, "positions": positions, "median_cpu_s": cpu, "us_per_position": cpu / positions * 1e6}
    return out


def _prompt_sweep(nlp, texts, lengths, window: int, repeats: int) -> dict:
    """``{P: {median_cpu_s, positions, us_per_position, vs_no_prompt}}``: the bare forward over
    ``texts`` in windows of ``window`` wordpieces, about 2,048 positions per call, with a deep
    prompt of each length P (positions: the text's, without the prompt), interleaved."""
    if not lengths:
        return {}
    bc.log(f"the bare forward by deep prompt length {lengths}, {repeats} rounds ...")
    encoder = nlp.get_pipe("transformer").model.encoder
    batches, counts = pt.bare_batches(nlp, texts, window=window, rows=max(1, round(2048 / window)))
    runners = {}
    for length in lengths:
        prefix = pt.deep_prefix(encoder, length) if length else None
        runners[str(length)] = pt.bare_forward(encoder.backbone, batches, prefix=prefix)
        runners[str(length)]()  # warm-up
    runs = pt.interleaved(runners, repeats)
    positions = counts["wordpieces_padded"]
    out = {length: {"median_cpu_s": pt.median([c for c, _ in values]), "positions": positions}
           for length, values in runs.items()}
    base = out.get("0", {}).get("median_cpu_s")
    for entry in out.values():
        entry["us_per_position"] = entry["median_cpu_s"] / positions * 1e6
        entry["vs_no_prompt"] = entry["median_cpu_s"] / base if base else None
    return out


def main(argv=None) -> int:
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--model", type=Path, default=None, help="a trained pipeline folder (default: --config, untrained heads)")
    parser.add_argument("--config", type=Path, default=pt.DEFAULT_CONFIG)
    parser.add_argument("--corpus", type=Path, default=pt.DEV_CORPUS)
    parser.add_argument("--init-docs", type=int, default=5)
    parser.add_argument("--docs", type=int, default=0, help="first N notes only (0: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--window", type=int, default=0, help="override the span window (spaCy tokens)")
    parser.add_argument("--stride", type=int, default=0, help="override the span stride")
    parser.add_argument("--sentence-windows", action="store_true",
                        help="sentence-aligned windows without overlap (spacy_softprompt.sentence_windows.v1)")
    parser.add_argument("--bare-window", type=int, default=128, help="wordpieces per window of the bare forward")
    parser.add_argument("--bare-rows", default="4,8,16,32,64",
                        help="windows per call tried for the bare forward (the fastest is the floor)")
    parser.add_argument("--primer", type=Path, default=pt.TRAIN_CORPUS,
                        help="notes that prime the wordpiece chunk cache in the side-by-side wordpiece timing")
    parser.add_argument("--old-forward", action="store_true", help="encoder rows in order, padded (before length chunks)")
    parser.add_argument("--old-batching", action="store_true",
                        help="also time the pipeline batched as before the position budget, interleaved with the other two")
    parser.add_argument("--window-sweep", default="",
                        help="comma list of bare-forward window lengths (wordpieces) to time per position, e.g. 96,128,160,192")
    parser.add_argument("--unaligned-keys", action="store_true",
                        help="also time the pipeline without the deep prompt's key alignment, interleaved")
    parser.add_argument("--prompt-sweep", default="",
                        help="comma list of deep prompt lengths to time the bare forward with, e.g. 0,5,20")
    parser.add_argument("--malloc", choices=("retain", "default"), default="retain",
                        help="retain: keep freed memory as `annotate` does by default (spacy_softprompt.memory); "
                             "default: glibc's own behaviour")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from spacy_softprompt.memory import apply_malloc_setting

    memory_retained = apply_malloc_setting(args.malloc)  # before anything large is allocated
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    if args.window and not args.sentence_windows:
        overrides["components.transformer.model.get_spans.window"] = args.window
    if args.stride and not args.sentence_windows:
        overrides["components.transformer.model.get_spans.stride"] = args.stride
    bc.log("building the pipeline ...")
    nlp, gold = pt.default_pipeline(args.config, model=args.model, corpus=args.corpus, init_docs=args.init_docs,
                                    overrides=overrides)
    if args.docs:
        gold = gold[: args.docs]
    get_spans = dict(nlp.config["components"]["transformer"]["model"]["get_spans"])
    if args.sentence_windows:
        get_spans = _use_sentence_windows(nlp, args.window or 128)
    calibration = None if args.model else pt.calibrate_entity_rate(nlp, gold)
    if args.old_forward:
        _use_old_forward(nlp)
    texts = [doc.text for doc in gold]
    backbone = pt.backbone_of(nlp)
    bc.log("the bare forward's fastest windows per call ...")
    bare_rows_cpu_s, windows, bare_runner = pt.fastest_bare_forward(
        nlp, texts, window=args.bare_window, rows_options=[int(r) for r in args.bare_rows.split(",") if r.strip()])
    runners = {"pipeline": pt.pipe_runner(nlp, texts), "bare forward": bare_runner}
    with pt.EncoderPositions(nlp) as positions:
        counts = pt.prediction_counts(runners["pipeline"]())  # warm-up, and what the encoder processes
    if args.old_batching:
        runners[OLD_BATCHING] = _old_batching(nlp, runners["pipeline"])
        with pt.EncoderPositions(nlp) as old_positions:
            old_counts = pt.prediction_counts(runners[OLD_BATCHING]())
        if old_counts != counts:
            raise SystemExit("the old batching predicted something else: the comparison would not be like for like")
    if args.unaligned_keys:
        runners[UNALIGNED_KEYS] = _unaligned_keys(nlp, runners["pipeline"])
        if pt.prediction_counts(runners[UNALIGNED_KEYS]()) != counts:
            raise SystemExit("without the key alignment the pipeline predicted something else: not like for like")
    words = counts["words"]
    bc.log(f"timing {len(texts)} notes, {words} words: pipeline vs bare forward, {args.repeats} rounds ...")
    runs = pt.interleaved(runners, args.repeats)
    speed = {}
    for name, values in runs.items():
        cpu, wall = pt.median([c for c, _ in values]), pt.median([w for _, w in values])
        speed[name] = {"words_per_cpu_s": words / cpu, "words_per_s": words / wall, "median_cpu_s": cpu,
                       "median_wall_s": wall, "runs_cpu_s": [c for c, _ in values], "runs_wall_s": [w for _, w in values]}
    ratio_cpu = speed["pipeline"]["words_per_cpu_s"] / speed["bare forward"]["words_per_cpu_s"]
    ratio_wall = speed["pipeline"]["words_per_s"] / speed["bare forward"]["words_per_s"]
    ratio_unaligned_keys, ratio_old_batching = (
        speed[name]["words_per_cpu_s"] / speed["bare forward"]["words_per_cpu_s"] if name in speed else None
        for name in (UNALIGNED_KEYS, OLD_BATCHING)
    )

    window_sweep = _window_sweep(nlp, texts, [int(w) for w in args.window_sweep.split(",") if w.strip()], args.repeats)
    prompt_sweep = _prompt_sweep(nlp, texts, [int(p) for p in args.prompt_sweep.split(",") if p.strip()],
                                 args.bare_window, args.repeats)

    bc.log(f"stage by stage, {args.repeats} rounds ...")
    pt.stage_seconds(nlp, texts)  # warm-up: the first stage-by-stage pass pays one-time costs
    stage_runs = [pt.stage_seconds(nlp, texts)[0] for _ in range(args.repeats)]
    stages = {name: pt.per_words(pt.median([r[name] for r in stage_runs]), words) for name in stage_runs[0]}
    parts = {name: stages.pop(name) for name in pt.TRANSFORMER_PARTS.values() if name in stages}
    device_work = stages.pop(pt.DEVICE_WORK_KEY, 0.0)
    host = sum(v for k, v in stages.items() if k != "forward")
    # side by side: the same tokenizer with spaCy's whitespace special cases (they switch its cache off)
    tokenizer_ab = {
        "tokenizer": pt.per_words(pt.tokenizer_cpu_s(nlp.tokenizer, texts, args.repeats), words),
        "tokenizer with whitespace special cases": pt.per_words(
            pt.tokenizer_cpu_s(pt.with_whitespace_special_cases(nlp.tokenizer), texts, args.repeats), words),
    }
    primer = [doc.text for doc in pt.corpus_docs(nlp, args.primer)] if args.primer.is_file() else []
    wordpieces_ab = {k: pt.per_words(v, words) for k, v in pt.wordpiece_seconds(nlp, texts, primer, args.repeats).items()}
    # a long-running worker: the same stages with the wordpiece cache primed by other notes
    primed_runs = [pt.stage_seconds(nlp, texts, primer=primer)[0] for _ in range(args.repeats)] if primer else []
    # ... and of it, what stays on the CPU with a GPU: the t_host of a long-running GPU worker
    host_primed = host_cpu_only_primed = None
    if primed_runs:
        primed = {name: pt.per_words(pt.median([r[name] for r in primed_runs]), words) for name in primed_runs[0]}
        host_primed = sum(v for k, v in primed.items()
                          if k not in ("forward", pt.DEVICE_WORK_KEY) and k not in pt.TRANSFORMER_PARTS.values())
        host_cpu_only_primed = host_primed - primed.get(pt.DEVICE_WORK_KEY, 0.0)
    bare_per_words = pt.per_words(speed["bare forward"]["median_cpu_s"], words)
    transformer_stage = stages.get("transformer", 0.0) + stages.get("forward", 0.0)

    report = bc.new_report("speed", args)
    report.update({
        "pipeline": str(args.model or args.config), "notes": len(texts), "counts": counts, "calibration": calibration,
        "get_spans": get_spans,
        "bare_windows": windows, "bare_rows_per_call_cpu_s": bare_rows_cpu_s, "encoder_positions": positions.counts(), "speed": speed, "ratio_cpu": ratio_cpu, "ratio_wall": ratio_wall,
        "ratio_cpu_old_batching": ratio_old_batching,
        "ratio_cpu_unaligned_keys": ratio_unaligned_keys,
        "bare_forward_by_window_length": window_sweep,
        "bare_forward_by_deep_prompt_length": prompt_sweep,
        "encoder_positions_old_batching": old_positions.counts() if args.old_batching else None,
        "stages_cpu_s_per_10k_words": stages, "transformer_parts_cpu_s_per_10k_words": parts,
        "host_cpu_s_per_10k_words": host,
        "host_without_tokenizer_cpu_s_per_10k_words": host - stages["tokenizer"],
        # of the host work, the array work a GPU takes over (pt.DEVICE_WORK), and what stays on the CPU
        "host_device_work_cpu_s_per_10k_words": device_work,
        "host_cpu_only_cpu_s_per_10k_words": host - device_work,
        "host_primed_cpu_s_per_10k_words": host_primed,
        "host_cpu_only_primed_cpu_s_per_10k_words": host_cpu_only_primed,
        "primer_notes": len(primer),
        "tokenizer_side_by_side_cpu_s_per_10k_words": tokenizer_ab,
        "wordpieces_side_by_side_cpu_s_per_10k_words": wordpieces_ab,
        "transformer_stage_vs_bare_forward": transformer_stage / bare_per_words,
        "torch_threads": torch.get_num_threads(),
        "memory_retained": memory_retained,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # peak of the whole run (Linux: KiB)
    })
    report["targets"]["pipeline / bare forward (CPU time)"] = bc.target_entry(ratio_cpu, TARGET_RATIO, True)
    report["targets"]["host CPU s per 10k words (one core)"] = bc.target_entry(host, TARGET_HOST_S, False, unit=" s")

    print()
    bc.print_table(("", "words/s", "words/CPU-s", "median CPU s", "median wall s"), [
        (name, f"{s['words_per_s']:.0f}", f"{s['words_per_cpu_s']:.0f}", f"{s['median_cpu_s']:.3f}", f"{s['median_wall_s']:.3f}")
        for name, s in speed.items()
    ])
    print(f"\npipeline / bare forward: {ratio_cpu:.3f} (CPU time), {ratio_wall:.3f} (wall), "
          f"{counts['entities']} entities, {counts['relations']} relations over {words} words\n")
    if window_sweep:
        bc.print_table(("bare forward, window (wordpieces)", "windows per call", "positions", "CPU us per position"), [
            (w, str(v["rows_per_call"]), str(v["positions"]), f"{v['us_per_position']:.1f}") for w, v in window_sweep.items()])
        print(f"(pipeline: {positions.counts()['real_wordpieces'] / max(positions.counts()['windows'], 1):.0f} real wordpieces per window "
              "on average, plus the prompt)\n")
    if prompt_sweep:
        bc.print_table(("bare forward, deep prompt length", "CPU us per position", "vs no prompt"), [
            (p, f"{v['us_per_position']:.1f}", "–" if v["vs_no_prompt"] is None else f"{v['vs_no_prompt']:.3f}x")
            for p, v in prompt_sweep.items()])
        print()
    if ratio_unaligned_keys is not None:
        print(f"{UNALIGNED_KEYS} / bare forward: {ratio_unaligned_keys:.3f} (CPU time)\n")
    if ratio_old_batching is not None:
        print(f"{OLD_BATCHING} / bare forward: {ratio_old_batching:.3f} (CPU time)\n")
    enc = positions.counts()
    print(f"encoder: {enc['real_wordpieces']} real wordpieces in {enc['processed_positions']} positions "
          f"({enc['backbone_calls']} backbone calls); bare forward: {windows['wordpieces']} in {windows['wordpieces_padded']}\n")
    bc.print_table(("stage", "CPU s per 10k words"), [(k, f"{v:.4f}") for k, v in stages.items()] + [
        (f"  (inside transformer) {k}", f"{v:.4f}") for k, v in parts.items()] + [
        ("host (all but forward)", f"{host:.4f}"),
        ("  of which array work a GPU takes over (gather/scatter, pooling, head products)", f"{device_work:.4f}"),
        ("  host work that stays on the CPU with a GPU", f"{host - device_work:.4f}"),
        (f"host, wordpiece cache primed with {len(primer)} other notes", "n/a" if host_primed is None else f"{host_primed:.4f}"),
        ("  of which stays on the CPU with a GPU (a long-running GPU worker)",
         "n/a" if host_cpu_only_primed is None else f"{host_cpu_only_primed:.4f}"),
        ("bare forward", f"{bare_per_words:.4f}"),
        ("transformer stage / bare forward", f"{transformer_stage / bare_per_words:.3f}x"),
    ] + [(f"  (side by side) {k}", f"{v:.4f}") for k, v in tokenizer_ab.items()]
      + [(f"  (side by side) wordpieces: {k}", f"{v:.4f}") for k, v in wordpieces_ab.items()])
    return bc.finish(report, args.output)


if __name__ == "__main__":
    sys.exit(main())
