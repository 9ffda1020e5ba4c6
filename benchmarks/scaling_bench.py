"""Scaling: time and memory as a note grows, and as the corpus grows.

* **note length** (``--lengths 1000,5000,20000`` words; each length in a fresh
  process): the shipped soft-frozen pipeline (transformer with a deep prompt,
  P = 5 since 2026-12-05 -- the stored scaling.json and scaling_long_notes.json
  were measured at P = 20 -- + ner + relation_extractor) on one synthetic note;
  seconds per component, words/s, peak memory above the memory before the
  call.  Because the untrained ner predicts an arbitrary number of entities,
  the relation extractor is also timed on the same note with *given*
  entities (a drug and three attributes every ~25 words, i.e. realistic
  density): its candidate generation is where a quadratic cost would show.
  Linear = words/s of the longest note >= 0.8x words/s of the shortest.
* **corpus size** (``--corpus-notes 2000`` short notes of ``--corpus-words``
  words, a small random MegatronBert by default): one ``nlp.pipe`` stream;
  seconds and process RSS after every ``--chunk`` notes (RSS read after a
  garbage collection and ``malloc_trim``, outside the timing, so transient
  buffers do not count).  Linear = the last chunk is no slower than 1.25x the
  second; no memory growth = RSS after the last chunk minus RSS after the
  first <= ``--max-growth-mb`` (default 32 MB); the least-squares slope (MB per
  1,000 notes) is reported too.

Run: ``python benchmarks/scaling_bench.py [--backbones minilm,gatortron-base-shaped]
[--layers 2] [--lengths 1000,5000,20000] [--corpus-notes 2000]``; the
GatorTron-shaped model defaults to 2 layers here (width 1024 as the real one):
scaling with length is what is measured, and 24 layers would take an hour on
CPU for a 20k-word note.  Writes ``benchmarks/results/scaling.json``.
"""
import gc
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402

RESULTS = bc.RESULTS_DIR / "scaling.json"
TARGET_LINEAR = 0.8
TARGET_CHUNK_SLOWDOWN = 1.25


def _trimmed_rss() -> float:
    """RSS after a garbage collection and glibc's malloc_trim (freed memory handed
    back), i.e. what the process really keeps."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return bc.rss_mb()


def _long_note(words: int, seed: int = 11):
    return bc.notes(1, words, seed=seed)[0]


def worker_length(spec):
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    nlp = bc.build_pipeline(spec["backbone"])
    list(nlp.pipe([_long_note(100)[0]]))  # warm-up
    text, ents, rels = _long_note(spec["words"])
    gc.collect()
    seconds = {}
    with bc.peak_memory("cpu") as memory:
        t0 = time.perf_counter()
        doc = nlp.make_doc(text)
        seconds["tokenizer"] = time.perf_counter() - t0
        for name, proc in nlp.pipeline:
            t = time.perf_counter()
            doc = proc(doc)
            seconds[name] = time.perf_counter() - t
        total = time.perf_counter() - t0
    predicted = {"entities": len(doc.ents), "relations": len(doc._.relations)}
    # the relation extractor again, on the same note with given entities (realistic density)
    given = bc.docs_with_entities(nlp, [(text, ents, rels)])[0]
    given = nlp.get_pipe("transformer")(given)
    rel = nlp.get_pipe("relation_extractor")
    t = time.perf_counter()
    pairs = rel.candidates(list(given.spans["entities"]))
    candidates_s = time.perf_counter() - t
    t = time.perf_counter()
    rel(given)
    rel_given_s = time.perf_counter() - t
    return {
        "words": len(doc),
        "seconds": total,
        "words_per_s": len(doc) / total,
        "seconds_per_component": seconds,
        "peak_above_start_mb": memory["above_start_mb"],
        "peak_mb": memory["peak_mb"],
        "windows": len(doc._.trf_data.wordpieces.input_ids) if len(doc) else 0,
        "predicted": predicted,
        "given_entities": len(ents),
        "relation_candidates_given": len(pairs),
        "relation_candidates_s_given": candidates_s,
        "relation_extractor_s_given": rel_given_s,
    }


def worker_corpus(spec):
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    nlp = bc.build_pipeline(spec["backbone"])
    n, words, chunk = spec["notes"], spec["words"], spec["chunk"]
    pool = [t for t, _, _ in bc.notes(50, words, seed=21)]

    def stream():
        for i in range(n):
            yield pool[i % len(pool)] + f" note {i}"

    list(nlp.pipe(pool[:8]))  # warm-up
    start_rss = _trimmed_rss()
    marks = []
    t0 = last = time.perf_counter()
    n_words = 0
    for i, doc in enumerate(nlp.pipe(stream(), batch_size=spec["batch_size"]), 1):
        n_words += len(doc)
        if i % chunk == 0:
            now = time.perf_counter()
            raw = bc.rss_mb()
            kept = _trimmed_rss()  # not timed
            marks.append({"notes": i, "chunk_s": now - last, "elapsed_s": now - t0, "rss_mb": kept, "rss_untrimmed_mb": raw, "words": n_words})
            last = time.perf_counter()
    total = sum(m["chunk_s"] for m in marks) or (time.perf_counter() - t0)
    return {"notes": n, "words": n_words, "seconds": total, "notes_per_s": n / total, "words_per_s": n_words / total,
            "rss_before_mb": start_rss, "marks": marks}


WORKERS = {"length": worker_length, "corpus": worker_corpus}


def main(argv=None) -> int:
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--backbones", default="minilm,gatortron-base-shaped", help="backbones for the note-length part")
    parser.add_argument("--layers", type=int, default=2, help="layers of the GatorTron-base-shaped model (width stays 1024)")
    parser.add_argument("--lengths", default="1000,5000,20000", help="note lengths in words")
    parser.add_argument("--corpus-backbone", default="tiny", choices=bc.BACKBONE_CHOICES)
    parser.add_argument("--corpus-notes", type=int, default=2000)
    parser.add_argument("--corpus-words", type=int, default=40)
    parser.add_argument("--chunk", type=int, default=200, help="notes between two measurements")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-growth-mb", type=float, default=32.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=bc.DEFAULT_WORKDIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if bc.serve_worker(args, WORKERS):
        return 0

    lengths = [int(x) for x in bc.csv(args.lengths)]
    report = bc.new_report("scaling", args, note_length={}, corpus={})
    rows = []
    for label, source in bc.backbone_sources(bc.csv(args.backbones), args.workdir, args.layers).items():
        per = {}
        for words in lengths:
            bc.log(f"{label}: one note of {words} words ...")
            per[words] = res = bc.run_worker(HERE / "scaling_bench.py", "length", {"backbone": source, "words": words, "threads": args.threads})
            comp = res["seconds_per_component"]
            rows.append((label, words, f"{res['seconds']:.1f}", f"{res['words_per_s']:.0f}",
                         f"{comp.get('transformer', 0):.1f} / {comp.get('ner', 0):.2f} / {comp.get('relation_extractor', 0):.2f}",
                         f"{res['peak_above_start_mb']:.0f}", f"{1000 * res['peak_above_start_mb'] / res['words']:.1f}",
                         res["predicted"]["entities"], f"{res['given_entities']} / {res['relation_candidates_given']} / {res['relation_candidates_s_given']:.2f}s"))
        report["note_length"][label] = {"source": source, "lengths": per}
        if len(lengths) > 1:
            lo, hi = per[min(lengths)], per[max(lengths)]
            report["targets"][f"{label}: words/s at {max(lengths)} / at {min(lengths)} words"] = bc.target_entry(
                hi["words_per_s"] / lo["words_per_s"], TARGET_LINEAR, True,
                note=f"peak memory {lo['peak_above_start_mb']:.0f} -> {hi['peak_above_start_mb']:.0f} MB above start")
            growth = (hi["relation_candidates_s_given"] / max(lo["relation_candidates_s_given"], 1e-9)) / (max(lengths) / min(lengths))
            report["targets"][f"{label}: relation candidates time growth / length growth (given entities)"] = bc.target_entry(
                growth, 2.0, False, note="1.0 = linear; the note length ratio is the quadratic value")

    corpus_rows = []
    if args.corpus_notes > 0:
        (label, source), = bc.backbone_sources([args.corpus_backbone], args.workdir, args.layers).items()
        bc.log(f"corpus: {args.corpus_notes} notes of {args.corpus_words} words through nlp.pipe ({label}) ...")
        res = bc.run_worker(HERE / "scaling_bench.py", "corpus", {"backbone": source, "notes": args.corpus_notes, "words": args.corpus_words,
                                                                  "chunk": args.chunk, "batch_size": args.batch_size, "threads": args.threads})
        marks = res["marks"]
        res["backbone"] = label
        report["corpus"] = res
        for m in marks:
            corpus_rows.append((m["notes"], f"{m['chunk_s']:.2f}", f"{m['elapsed_s']:.1f}", f"{m['rss_mb']:.0f}", f"{m['rss_untrimmed_mb']:.0f}"))
        if len(marks) >= 3:
            slowdown = marks[-1]["chunk_s"] / marks[1]["chunk_s"]
            growth = marks[-1]["rss_mb"] - marks[0]["rss_mb"]
            res["last_chunk_over_second"] = slowdown
            res["rss_growth_mb"] = growth
            xs = [m["notes"] for m in marks]
            ys = [m["rss_mb"] for m in marks]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            res["rss_slope_mb_per_1000_notes"] = 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            report["targets"][f"corpus ({label}): last chunk time / second chunk"] = bc.target_entry(slowdown, TARGET_CHUNK_SLOWDOWN, False)
            report["targets"][f"corpus ({label}): RSS growth after the first chunk (MB)"] = bc.target_entry(
                growth, args.max_growth_mb, False, unit=" MB",
                note=f"over {marks[-1]['notes'] - marks[0]['notes']} notes; slope {res['rss_slope_mb_per_1000_notes']:.1f} MB per 1,000 notes")
    print()
    bc.print_table(("backbone", "words", "seconds", "words/s", "s: transformer / ner / rel", "peak MB above start",
                    "MB per 1k words", "entities (untrained ner)", "given ents / candidates / candidate time"), rows)
    if corpus_rows:
        print()
        bc.print_table(("notes", "chunk s", "elapsed s", "RSS MB (trimmed)", "RSS MB (raw)"), corpus_rows)
    return bc.finish(report, args.output)


if __name__ == "__main__":
    sys.exit(main())
