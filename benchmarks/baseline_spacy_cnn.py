"""Peer baseline: spaCy's own CNN ``ner``, trained with ``spacy train`` on the same DocBins.

What a plain spaCy user would do: the config of ``spacy init config --lang en
--pipeline ner --optimize accuracy`` (CPU: tok2vec = MultiHashEmbed + 8-layer
MaxoutWindowEncoder, width 256; transition-based ``ner``; Adam 1e-3,
batches by words), with three changes, all recorded in the results:

* no static vectors exist offline: ``paths.vectors = null`` and
  ``include_static_vectors = false`` (the generated config asks for
  ``en_core_web_lg``);
* the tokenizer is the package's clinical tokenizer (``--tokenizer spacy`` keeps
  spaCy's English one), which made the DocBins: ``spacy.Corpus.v1`` (as in the
  package's configs) re-tokenizes each text with the pipeline's tokenizer and
  aligns the gold ``doc.ents``, so training sees the docs' own tokens, and
  prediction on raw dev texts tokenizes the same way;
* the logger (``spacy.ConsoleLogger.v3``) also writes every evaluation to
  ``train_log.jsonl`` for the per-evaluation figures.

``--max-steps``, ``--eval-frequency``, ``--patience`` and ``--seed`` set
``training.max_steps``, ``training.eval_frequency``, ``training.patience`` and
``system.seed`` (spaCy's defaults otherwise). ``spacy train`` picks
``model-best`` by its own ``ents_f`` on dev; that model and ``model-last``
then run on the dev *texts* and are scored against every gold entity with the
package's n2c2 scorer (``spacy_softprompt.evaluation.evaluate_pipeline``, the
function behind ``python -m spacy_softprompt evaluate``). model-best's metrics,
less the relation figures (the pipeline has no relation extractor), are also
written as a metrics JSON with each dev document's counts under ``"per_doc"``,
for ``python -m spacy_softprompt compare OURS*.json --vs THIS*.json``
(``--metrics-output``; default next to ``--output``: ``<stem>-seed<seed>.metrics.json``).

Run: ``python benchmarks/baseline_spacy_cnn.py [--train T.spacy --dev D.spacy] [--max-steps 20000
--eval-frequency 200 --patience 1600 --seed 0] [--workdir DIR]``; writes
``benchmarks/results/baseline_spacy_cnn.json`` and ``benchmarks/results/baseline_spacy_cnn-seed0.metrics.json``.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import baseline_common as common  # noqa: E402
import bench_common as bc  # noqa: E402

RESULTS = bc.RESULTS_DIR / "baseline_spacy_cnn.json"
CLINICAL_TOKENIZER = {"@tokenizers": "spacy_softprompt.ClinicalTokenizer.v1"}


def make_config(tokenizer: str = "clinical", log_file: Path = None):
    """``spacy init config --pipeline ner --optimize accuracy`` (CPU), without static
    vectors, with the clinical tokenizer and a JSONL training log; returns the Config
    and the list of changes made to the generated one."""
    from spacy.cli.init_config import init_config

    config = init_config(lang="en", pipeline=["ner"], optimize="accuracy", gpu=False)
    changes = []
    if config["paths"].get("vectors") is not None:
        changes.append(f"paths.vectors: {config['paths']['vectors']!r} -> null (no static vectors offline)")
        config["paths"]["vectors"] = None
    embed = config["components"]["tok2vec"]["model"]["embed"]
    if embed.get("include_static_vectors"):
        embed["include_static_vectors"] = False
        changes.append("components.tok2vec.model.embed.include_static_vectors: true -> false")
    if tokenizer == "clinical":
        config["nlp"]["tokenizer"] = dict(CLINICAL_TOKENIZER)
        changes.append("nlp.tokenizer: spacy.Tokenizer.v1 -> spacy_softprompt.ClinicalTokenizer.v1 (made the DocBins)")
    if log_file is not None:
        config["training"]["logger"] = {"@loggers": "spacy.ConsoleLogger.v3", "progress_bar": None,
                                        "console_output": True, "output_file": str(log_file)}
        changes.append("training.logger: spacy.ConsoleLogger.v3 with output_file (per-evaluation JSONL)")
    return config, changes


def read_log(path: Path) -> List[Dict[str, Any]]:
    """The evaluations of a ConsoleLogger.v3 JSONL log: step, epoch, score, spaCy's ents_p/r/f, ner loss."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        scores = entry.get("scores") or {}
        out.append({"step": entry.get("step"), "epoch": entry.get("epoch"), "score": entry.get("score"),
                    **{f"spacy_{k}": scores.get(k) for k in ("ents_p", "ents_r", "ents_f")},
                    "ner_loss": (entry.get("losses") or {}).get("ner")})
    return out


def evaluate(model_dir: Path, dev: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The package's n2c2 scores of a trained pipeline on the dev texts: the report
    entry (rounded figures) and the full metrics dict as ``evaluate --output`` writes
    it, entities only (:func:`baseline_common.entities_only`)."""
    import spacy

    from spacy_softprompt.evaluation import evaluate_pipeline, load_gold_docs

    nlp = spacy.load(model_dir)
    gold = load_gold_docs(dev, nlp)
    scores = evaluate_pipeline(nlp, gold, batch_size=32)
    meta = json.loads((model_dir / "meta.json").read_text(encoding="utf8"))
    entry = {**common.entity_summary(scores), "per_type": common.per_type(scores),
             "words_per_second": scores.get("words_per_second"),
             "spacy_performance": {k: v for k, v in (meta.get("performance") or {}).items() if k != "ents_per_type"}}
    metrics = common.entities_only(scores)
    metrics.update(model=str(model_dir), pipeline=nlp.pipe_names)
    return entry, metrics


def limited_copy(source: Path, target: Path, limit: int) -> Path:
    """The first ``limit`` docs of a DocBin (``--limit-docs``, for tests)."""
    from spacy.tokens import DocBin

    docs = common.load_docs(source, common.clinical_nlp(), limit)
    DocBin(docs=docs, store_user_data=True).to_disk(target)
    return target


def main(argv=None) -> int:
    parser = bc.bench_parser(__doc__)
    parser.add_argument("--train", type=Path, default=common.DEFAULT_TRAIN, help="training DocBin")
    parser.add_argument("--dev", type=Path, default=common.DEFAULT_DEV, help="dev DocBin (model-best and scores)")
    parser.add_argument("--max-steps", type=int, default=20000, help="training.max_steps (spaCy's default 20000)")
    parser.add_argument("--eval-frequency", type=int, default=200, help="training.eval_frequency")
    parser.add_argument("--patience", type=int, default=1600, help="training.patience (steps without improvement)")
    parser.add_argument("--seed", type=int, default=0, help="system.seed")
    parser.add_argument("--tokenizer", choices=("clinical", "spacy"), default="clinical")
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads of the training process")
    parser.add_argument("--limit-docs", type=int, default=None, help="first N train and dev docs (tests)")
    parser.add_argument("--workdir", type=Path, default=bc.DEFAULT_WORKDIR / "baseline_spacy_cnn",
                        help="config, training log and models go here (replaced)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--metrics-output", type=Path, default=None,
                        help="model-best's dev metrics with per-document counts, in the format of "
                             "'evaluate --output', for 'compare' (default: next to --output, <stem>-seed<seed>.metrics.json)")
    args = parser.parse_args(argv)
    if args.metrics_output is None:
        args.metrics_output = common.default_metrics_path(args.output, args.seed)

    wall_start = time.perf_counter()
    report = bc.new_report("baseline_spacy_cnn", args)
    report.pop("targets")
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    train, dev = args.train, args.dev
    for path in (train, dev):
        if not Path(path).is_file():
            raise SystemExit(f"error: no DocBin at {path} (make it with 'spacy project run convert' or pass --train/--dev)")
    if args.limit_docs:
        train = limited_copy(train, args.workdir / "train.spacy", args.limit_docs)
        dev = limited_copy(dev, args.workdir / "dev.spacy", args.limit_docs)
    log_file = args.workdir / "train_log.jsonl"
    config, changes = make_config(args.tokenizer, log_file)
    config_path = args.workdir / "config.cfg"
    config.to_disk(config_path)

    command = [sys.executable, "-m", "spacy", "train", str(config_path), "--output", str(args.workdir / "model"),
               "--paths.train", str(train), "--paths.dev", str(dev),
               "--training.max_steps", str(args.max_steps), "--training.eval_frequency", str(args.eval_frequency),
               "--training.patience", str(args.patience), "--system.seed", str(args.seed)]
    env = os.environ.copy()
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
    bc.log(" ".join(command))
    start = time.perf_counter()
    result = subprocess.run(command, env=env)
    train_s = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: spacy train failed (exit status {result.returncode})")

    evaluations = read_log(log_file)
    # spacy train saves model-best at every evaluation that equals the best score so far (the last tie wins)
    best_eval = max(evaluations, key=lambda e: (e["score"] or 0.0, e["step"])) if evaluations else None
    checkpoints, metrics = {}, {}
    for name in ("model-best", "model-last"):
        checkpoints[name], metrics[name] = evaluate(args.workdir / "model" / name, dev)
    best_metrics = dict(metrics["model-best"], system="baseline_spacy_cnn", best_step=best_eval["step"] if best_eval else None,
                        seed=args.seed, dev=str(args.dev))
    nlp = common.clinical_nlp()
    report.update(
        config_changes=changes,
        command=command,
        data={"train": common.corpus_stats(common.load_docs(train, nlp)), "dev": common.corpus_stats(common.load_docs(dev, nlp))},
        evaluations=evaluations,
        steps=evaluations[-1]["step"] if evaluations else None,
        best_step=best_eval["step"] if best_eval else None,
        best=checkpoints["model-best"],
        last=checkpoints["model-last"],
        train_s=round(train_s, 1),
        wall_s=round(time.perf_counter() - wall_start, 1),
        workdir=str(args.workdir),
        metrics_file=str(args.metrics_output),
    )
    print()
    bc.print_table(common.SCORE_HEADER, [common.score_row(f"model-best (step {report['best_step']})", report["best"]),
                                         common.score_row("model-last", report["last"])])
    bc.write_report(report, args.output)
    common.write_metrics(best_metrics, args.metrics_output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
