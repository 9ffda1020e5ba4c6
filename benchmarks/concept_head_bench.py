"""Concept heads side by side: ``token_ner`` vs the transition-based ``ner`` on the same
transformer output.

The transformer of the ``--token-ner`` pipeline annotates the notes once
(``doc._.trf_data``, timed); then each head runs over those same Docs through
its own listener, alternating ``--repeats`` times (the transition-based
``ner`` takes one step per token whatever its weights, so its speed does not
depend on which transformer trained it). Reports ms per 10k words per stage,
each head's time as a share of the transformer's, and the n2c2 entity F1 of
both full pipelines on the notes.

    python benchmarks/concept_head_bench.py --token-ner training/tok/model-best \\
        --ner training/ner/model-best --docs corpus/dev.spacy [--gpu-id 0]
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402


def _timed(fn: Callable[[], object], gpu: bool) -> float:
    bc.synchronize("cuda" if gpu else "cpu")
    start = time.perf_counter()
    fn()
    bc.synchronize("cuda" if gpu else "cpu")
    return time.perf_counter() - start


def _untrained_ner(path: str, gold: list):
    """The token_ner pipeline with ``token_ner`` replaced by an initialised, untrained
    transition-based ``ner`` (the shipped configs' settings)."""
    import spacy
    from spacy.training import Example
    from spacy.util import load_config

    nlp = spacy.load(path)
    cfg = dict(load_config(HERE.parent / "configs" / "soft_cpu.cfg", interpolate=False)["components"]["ner"])
    cfg.pop("factory")
    nlp.remove_pipe("token_ner")
    nlp.remove_pipe("relation_extractor")
    ner = nlp.add_pipe("ner", config=cfg)
    docs = list(nlp.get_pipe("transformer").pipe([nlp.make_doc(doc.text) for doc in gold[:4]]))
    examples = [Example(doc, ref) for doc, ref in zip(docs, gold)]
    ner.initialize(lambda: examples, nlp=nlp)
    return nlp


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--token-ner", required=True, help="trained pipeline with token_ner (its transformer is used)")
    parser.add_argument(
        "--ner",
        default=None,
        help="trained pipeline with the transition-based ner (default: an untrained ner head, configured as in "
        "configs/soft_cpu.cfg, added over the --token-ner pipeline's transformer; its F1 is not reported)",
    )
    parser.add_argument("--docs", required=True, help=".spacy file of gold notes")
    parser.add_argument("--limit", type=int, default=0, help="first N notes (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--output", default=str(HERE / "results" / "concept_head.json"))
    args = parser.parse_args(argv)

    import spacy
    from spacy.tokens import DocBin
    from spacy.training import Example

    import spacy_softprompt  # noqa: F401  (token_ner without installed entry points)

    gpu = args.gpu_id >= 0
    if gpu:
        spacy.require_gpu(args.gpu_id)
    tok_nlp = spacy.load(args.token_ner)
    gold = list(DocBin().from_disk(args.docs).get_docs(tok_nlp.vocab))
    if args.limit:
        gold = gold[: args.limit]
    ner_nlp = spacy.load(args.ner) if args.ner else _untrained_ner(args.token_ner, gold)
    words = sum(len(doc) for doc in gold)
    per_10k = 10_000 / max(1, words)

    docs = [tok_nlp.make_doc(doc.text) for doc in gold]
    transformer = tok_nlp.get_pipe("transformer")
    list(transformer.pipe([tok_nlp.make_doc(doc.text) for doc in gold[:2]]))  # warm-up, untimed
    trf_s = _timed(lambda: list(transformer.pipe(docs, batch_size=args.batch_size)), gpu)
    heads: Dict[str, Callable] = {
        "token_ner": tok_nlp.get_pipe("token_ner"),
        "ner": ner_nlp.get_pipe("ner"),
    }
    times: Dict[str, List[float]] = {name: [] for name in heads}
    for _ in range(args.repeats):
        for name, head in heads.items():
            times[name].append(_timed(lambda: list(head.pipe(docs, batch_size=args.batch_size)), gpu))

    f1 = {"ner": None}
    for name, nlp in (("token_ner", tok_nlp), ("ner", ner_nlp)) if args.ner else (("token_ner", tok_nlp),):
        examples = [Example(nlp.make_doc(doc.text), doc) for doc in gold]
        f1[name] = nlp.evaluate(examples, batch_size=args.batch_size).get("ents_strict_f")

    report = {
        "token_ner_pipeline": args.token_ner,
        "ner_pipeline": args.ner,
        "device": f"gpu {args.gpu_id}" if gpu else "cpu",
        "notes": len(gold),
        "words": words,
        "batch_size": args.batch_size,
        "ner_head": "trained" if args.ner else "untrained, on the token_ner pipeline's transformer",
        "transformer_ms_per_10k_words": 1000 * trf_s * per_10k,
        "heads": {
            name: {
                "ms_per_10k_words": 1000 * min(ts) * per_10k,
                "share_of_transformer": min(ts) / trf_s,
                "ents_strict_f": f1[name],
                "runs_s": ts,
            }
            for name, ts in times.items()
        },
    }
    report["ner_over_token_ner"] = min(times["ner"]) / max(1e-9, min(times["token_ner"]))
    print(f"{len(gold)} notes, {words} words, {report['device']}, batch {args.batch_size}")
    print("| stage | ms / 10k words | share of transformer | ents strict F1 (own pipeline) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| transformer | {report['transformer_ms_per_10k_words']:.0f} | 1.00 | |")
    for name, row in report["heads"].items():
        f = "-" if row["ents_strict_f"] is None else f"{row['ents_strict_f']:.3f}"
        print(f"| {name} | {row['ms_per_10k_words']:.0f} | {row['share_of_transformer']:.3f} | {f} |")
    print(f"ner / token_ner time: {report['ner_over_token_ner']:.1f}x")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
