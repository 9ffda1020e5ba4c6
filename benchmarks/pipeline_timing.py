"""Timing the default pipeline against the bare forward of its own backbone.

Used by ``speed_bench.py`` (``python -m spacy_softprompt bench speed``):

* :func:`default_pipeline`: the pipeline the main job trains (a shipped config,
  by default ``configs/tok_soft_cpu.cfg``: deep prompts P=20, ``token_ner`` +
  ``relation_extractor``) initialised on a few corpus documents, or a trained
  pipeline loaded from a folder;
* :func:`calibrate_entity_rate`: untrained heads tag about half the tokens as
  entities, which makes the relation stage far more expensive than in a
  trained pipeline; the ``O`` bias of ``token_ner`` is raised so that the share
  of tokens whose best tag is not ``O`` equals the gold share of the corpus;
* :func:`bare_batches` / :func:`bare_forward`: the backbone's own forward over
  the same text cut into non-overlapping windows of ``window`` wordpieces
  (specials included), ``rows`` windows per call, no prompt: the floor;
* :func:`stage_seconds`: CPU seconds per stage of ``nlp.pipe`` (spaCy tokenizer,
  each component) with the backbone's forward counted apart, so the host work
  around the forward is visible;
* :func:`interleaved`: runs A B, B A, A B ... and keeps every run, so that load
  from other processes hits both sides alike (medians are compared).
"""
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "tok_soft_cpu.cfg"
DEV_CORPUS = REPO / "corpus" / "maccrobat2020-maccrobat_medication-dev.spacy"
TRAIN_CORPUS = REPO / "corpus" / "maccrobat2020-maccrobat_medication-train.spacy"
WORDS_UNIT = 10_000  # host costs are CPU seconds per this many words


def corpus_docs(nlp, path: Path = DEV_CORPUS) -> list:
    from spacy.tokens import DocBin

    return list(DocBin().from_disk(path).get_docs(nlp.vocab))


def default_pipeline(
    config: Path = DEFAULT_CONFIG,
    *,
    model: Optional[Path] = None,
    corpus: Path = DEV_CORPUS,
    init_docs: int = 5,
    overrides: Optional[Dict[str, Any]] = None,
    seed: int = 0,
):
    """``(nlp, gold docs)``: ``model`` loaded, or ``config`` initialised on the
    first ``init_docs`` documents of ``corpus`` (heads untrained)."""
    import spacy
    from spacy.training import Example
    from spacy.util import fix_random_seed, load_config, load_model_from_config

    import spacy_softprompt  # noqa: F401  (registers the architectures)

    overrides = dict(overrides or {})
    if model is not None:
        nlp = spacy.load(model, config=overrides)
        return nlp, corpus_docs(nlp, corpus)
    fix_random_seed(seed)
    paths = {"paths.train": str(corpus), "paths.dev": str(corpus)}
    cfg = load_config(config, overrides={**paths, **overrides}, interpolate=True)
    nlp = load_model_from_config(cfg, auto_fill=True, validate=True)
    gold = corpus_docs(nlp, corpus)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in gold[:init_docs]]
    nlp.initialize(lambda: examples)
    return nlp, gold


def calibrate_entity_rate(nlp, gold: Sequence, ner_name: str = "token_ner") -> Dict[str, float]:
    """Raise the ``O`` bias of an untrained ``token_ner`` so that the share of
    tokens tagged as (part of) an entity matches the gold share; returns both shares."""
    ner = nlp.get_pipe(ner_name)
    docs = [nlp.make_doc(doc.text) for doc in gold]
    for name, proc in nlp.pipeline:
        if name == ner_name:
            break
        docs = list(proc.pipe(docs))
    scores = numpy.concatenate([ner.model.ops.to_numpy(s) for s in ner.model.predict(docs)])
    margin = scores[:, 1:].max(axis=1) - scores[:, 0]
    gold_entities = sum(len(doc.ents) for doc in gold)
    gold_share = sum(len(ent) for doc in gold for ent in doc.ents) / max(1, sum(len(doc) for doc in gold))
    shift = float(numpy.quantile(margin, 1.0 - gold_share))
    output = ner.model.get_ref("output_layer")
    bias = output.get_param("b").copy()
    bias[0] += shift
    output.set_param("b", bias)
    return {"gold_entities": gold_entities, "gold_entity_token_share": gold_share, "o_bias_shift": shift}


# ------------------------------------------------------------------ the bare forward
def bare_batches(nlp, texts: Sequence[str], *, window: int = 128, rows: int = 32, device: str = "cpu") -> Tuple[list, Dict[str, int]]:
    """Input batches of the backbone over ``texts``: each text's wordpieces cut
    into consecutive windows of ``window - 2`` plus ``[CLS]``/``[SEP]``, ``rows``
    windows per batch, padded to the longest; and their counts."""
    import torch

    tokenizer = nlp.get_pipe("transformer").model.tokenizer
    pieces = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    body = window - 2
    windows = [
        [tokenizer.cls_token_id] + ids[start : start + body] + [tokenizer.sep_token_id]
        for ids in pieces
        for start in range(0, max(len(ids), 1), body)
    ]
    batches = padded_batches(windows, rows, device)
    counts = {
        "windows": len(windows),
        "wordpieces": sum(len(w) for w in windows),
        "wordpieces_padded": sum(int(b["input_ids"].numel()) for b in batches),
    }
    return batches, counts


def padded_batches(rows_of_ids: Sequence[Sequence[int]], rows: int, device: str = "cpu") -> List[Dict[str, Any]]:
    """``{"input_ids", "attention_mask"}`` batches of ``rows`` id lists each, zero-padded
    to the longest list of the batch, on ``device``."""
    import torch

    batches = []
    for first in range(0, len(rows_of_ids), rows):
        part = rows_of_ids[first : first + rows]
        width = max(len(r) for r in part)
        ids = torch.zeros((len(part), width), dtype=torch.long)
        mask = torch.zeros((len(part), width), dtype=torch.long)
        for i, r in enumerate(part):
            ids[i, : len(r)] = torch.as_tensor(r)
            mask[i, : len(r)] = 1
        batches.append({"input_ids": ids.to(device), "attention_mask": mask.to(device)})
    return batches


def backbone_of(nlp):
    return nlp.get_pipe("transformer").model.encoder.backbone


def deep_prefix(encoder, prompt_length: int, seed: int = 0):
    """A deep prompt's key/value table ``[layers, 2, 1, heads, P, head_dim]``: the encoder's own
    when it has a deep prompt of that length, else random values of that shape (the cost of
    attending to P more keys does not depend on their values)."""
    import torch

    device = next(encoder.backbone.parameters()).device
    if prompt_length == encoder.prompt_length:
        own = encoder._shared_kv(device)
        if own is not None:
            return own
    config = encoder.backbone.config
    heads = config.num_attention_heads
    shape = (config.num_hidden_layers, 2, 1, heads, prompt_length, config.hidden_size // heads)
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * 0.1).to(device)


def with_prefix(inputs: Dict[str, Any], kv) -> Dict[str, Any]:
    """The backbone's inputs with a deep prefix passed as the encoder passes it: one key/value
    table per layer expanded over the rows (``past_key_values``), P ones before the attention
    mask, positions counted from 0 at the first real wordpiece."""
    import torch

    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    batch, width = ids.shape
    past = tuple((kv[i, 0].expand(batch, -1, -1, -1), kv[i, 1].expand(batch, -1, -1, -1)) for i in range(kv.shape[0]))
    return {
        "input_ids": ids,
        "attention_mask": torch.cat([mask.new_ones((batch, kv.shape[4])), mask], dim=1),
        "position_ids": torch.arange(width, device=ids.device).expand(batch, width),
        "past_key_values": past,
    }


def bare_forward(backbone, batches: list, dtype: Optional[str] = None, prefix=None) -> Callable[[], None]:
    """A runner: the backbone's forward over ``batches`` without gradients (CUDA
    autocast to ``dtype`` when given), synchronised at the end on a GPU; ``prefix``
    (:func:`deep_prefix`): with a deep prompt (:func:`with_prefix`, built inside the clock)."""
    import contextlib

    import torch

    device = next(backbone.parameters()).device
    cast = (
        torch.autocast("cuda", dtype=getattr(torch, dtype))
        if dtype and device.type == "cuda"
        else contextlib.nullcontext()
    )

    def run() -> None:
        backbone.eval()  # the pipeline's shim leaves it in training mode after a predict
        with torch.no_grad(), cast:
            for inputs in batches:
                backbone(**(inputs if prefix is None else with_prefix(inputs, prefix)))
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def fastest_bare_forward(
    nlp, texts: Sequence[str], *, window: int = 128, rows_options: Sequence[int] = (4, 8, 16, 32, 64), repeats: int = 2
) -> Tuple[Dict[int, float], Dict[str, int], Callable[[], None]]:
    """``({rows per call: median CPU s}, the windows' counts, runner)`` for the fastest
    number of windows per backbone call: the bare forward at its best is the floor."""
    backbone = backbone_of(nlp)
    runners, counts = {}, {}
    for rows in rows_options:
        batches, counts = bare_batches(nlp, texts, window=window, rows=rows)
        runners[rows] = bare_forward(backbone, batches)
        runners[rows]()  # warm-up
    runs = interleaved(runners, repeats)
    cpu_s = {rows: median([c for c, _ in values]) for rows, values in runs.items()}
    best = min(cpu_s, key=cpu_s.get)
    counts = dict(counts, rows_per_call=best)
    return cpu_s, counts, runners[best]


def forget_wordpieces(nlp) -> None:
    """Empty the transformer's wordpiece chunk cache: the next run sees every note for the first time."""
    from spacy_softprompt.encoder.wordpieces import chunk_cache

    cache = chunk_cache(nlp.get_pipe("transformer").model.tokenizer)
    if cache is not None:
        cache.clear()


def pipe_runner(nlp, texts: Sequence[str], batch_size: Optional[int] = None) -> Callable[[], list]:
    """A runner: ``nlp.pipe`` over ``texts``, its wordpiece cache emptied first (no note seen before)."""
    import torch

    def run() -> list:
        forget_wordpieces(nlp)
        docs = list(nlp.pipe(texts, batch_size=batch_size or nlp.batch_size))
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return docs

    return run


# ------------------------------------------------------------------ per-stage CPU time
class ForwardClock:
    """Counts the CPU (and wall) seconds spent inside ``backbone.forward``."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self._original = None

    def __enter__(self) -> "ForwardClock":
        import torch

        original = self.backbone.forward
        clock = self

        def timed(*args, **kwargs):
            cpu, wall = time.process_time(), time.perf_counter()
            out = original(*args, **kwargs)
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            clock.cpu_s += time.process_time() - cpu
            clock.wall_s += time.perf_counter() - wall
            return out

        self._original = original
        self.backbone.forward = timed
        return self

    def reset(self) -> None:
        self.cpu_s = self.wall_s = 0.0

    def __exit__(self, *exc) -> None:
        del self.backbone.forward  # the instance attribute set above


#: inner steps of the transformer's host work, timed inside it (``encoder.layer`` functions)
TRANSFORMER_PARTS = {"wordpiece_batch": "transformer: wordpieces", "alignment_via_offset_mapping": "transformer: alignment"}

#: array work outside the backbone that runs on the GPU when the pipeline does (module, function):
#: the encoder's length-chunk gather / scatter, the pooling of wordpieces into tokens and the
#: heads' matrix products; on a GPU the CPU only launches it
DEVICE_WORK = {
    ("spacy_softprompt.encoder.model", "_take_rows"): "encoder row gather",
    ("spacy_softprompt.encoder.model", "_scatter_rows"): "encoder row scatter",
    ("spacy_softprompt.heads.listener", "_pool_each_document"): "token pooling",
    ("spacy_softprompt.heads.linear", "product"): "token_ner tag scores",
}
#: thinc layers of the relation classifier whose forward is array work (timed through ``model._func``)
DEVICE_LAYERS = {"maxout": "relation classifier", "softmax": "relation classifier"}
DEVICE_WORK_KEY = "device work"


class _PartClock:
    """CPU seconds inside some functions: :data:`TRANSFORMER_PARTS` of
    ``spacy_softprompt.encoder.layer`` (each apart) and :data:`DEVICE_WORK` plus
    the :data:`DEVICE_LAYERS` of ``nlp`` (summed under :data:`DEVICE_WORK_KEY`,
    outermost calls only, so a nested one is not counted twice)."""

    def __init__(self, nlp=None):
        self.nlp = nlp
        self.cpu_s: Dict[str, float] = {}
        self._saved: List[Tuple[Any, str, Callable]] = []
        self._depth = 0

    def _timed(self, original: Callable, name: str, nested: bool) -> Callable:
        def timed(*args, **kwargs):
            if nested and self._depth:
                return original(*args, **kwargs)
            start = time.process_time()
            self._depth += nested
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= nested
                self.cpu_s[name] = self.cpu_s.get(name, 0.0) + time.process_time() - start

        return timed

    def _patch(self, owner: Any, attr: str, name: str, nested: bool) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # an earlier revision without this function (host-side-by-side)
            return
        self._saved.append((owner, attr, original))
        setattr(owner, attr, self._timed(original, name, nested))

    def __enter__(self) -> "_PartClock":
        import importlib

        from spacy_softprompt.encoder import layer

        for attr, name in TRANSFORMER_PARTS.items():
            self._patch(layer, attr, name, False)
        for (module, attr), _ in DEVICE_WORK.items():
            self._patch(importlib.import_module(module), attr, DEVICE_WORK_KEY, True)
        if self.nlp is not None:
            for _, component in self.nlp.pipeline:
                for node in getattr(getattr(component, "model", None), "walk", lambda: [])():
                    if node.name in DEVICE_LAYERS:
                        self._patch(node, "_func", DEVICE_WORK_KEY, True)
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)
        self._saved.clear()


class EncoderPositions:
    """Wordpiece positions the encoder's backbone calls processed: real ones
    (attention mask) and all of them (padding included), prompts excluded."""

    def __init__(self, nlp):
        self.encoder = nlp.get_pipe("transformer").model.encoder
        self.real = self.processed = self.calls = self.windows = 0

    def __enter__(self) -> "EncoderPositions":
        original = self.encoder._forward_rows

        def counted(input_ids, attention_mask, *args, **kwargs):
            self.calls += 1
            self.windows += int(input_ids.shape[0])
            self.processed += int(input_ids.numel())
            self.real += int(attention_mask.sum()) if attention_mask is not None else int(input_ids.numel())
            return original(input_ids, attention_mask, *args, **kwargs)

        self.encoder._forward_rows = counted
        return self

    def __exit__(self, *exc) -> None:
        del self.encoder._forward_rows

    def counts(self) -> Dict[str, int]:
        return {"backbone_calls": self.calls, "windows": self.windows, "real_wordpieces": self.real,
                "processed_positions": self.processed}


def prime_wordpieces(nlp, primer: Sequence[str]) -> None:
    """Empty the wordpiece chunk cache, then fill it with the windows of ``primer``
    (notes a worker annotated before): the steady state of a long-running worker."""
    from spacy_softprompt.encoder.wordpieces import wordpiece_batch

    forget_wordpieces(nlp)
    model = nlp.get_pipe("transformer").model
    docs = [nlp.make_doc(text) for text in primer]
    for start in range(0, len(docs), nlp.batch_size):
        spans = model.attrs["get_spans"](docs[start : start + nlp.batch_size])
        wordpiece_batch(model.tokenizer, [span.text for doc_spans in spans for span in doc_spans])


def stage_seconds(
    nlp, texts: Sequence[str], batch_size: Optional[int] = None, primer: Optional[Sequence[str]] = None
) -> Tuple[Dict[str, float], int]:
    """CPU seconds per stage, the stages run one after the other over all texts:
    ``tokenizer``, each component (its host work: the backbone's forward is
    taken out of ``transformer``), ``forward``, and two inner steps of the
    transformer's host work (:data:`TRANSFORMER_PARTS`, included in
    ``transformer``) and the array work a GPU would do (:data:`DEVICE_WORK_KEY`,
    included in the stages); plus the number of words.  The wordpiece cache starts
    empty, or primed with ``primer`` (:func:`prime_wordpieces`)."""
    batch_size = batch_size or nlp.batch_size
    seconds: Dict[str, float] = {}
    if primer:
        prime_wordpieces(nlp, primer)
    else:
        forget_wordpieces(nlp)
    with ForwardClock(backbone_of(nlp)) as clock, _PartClock(nlp) as parts:
        start = time.process_time()
        docs = [nlp.make_doc(text) for text in texts]
        seconds["tokenizer"] = time.process_time() - start
        for name, proc in nlp.pipeline:
            clock.reset()
            start = time.process_time()
            docs = list(proc.pipe(docs, batch_size=batch_size))
            seconds[name] = time.process_time() - start - clock.cpu_s
            if clock.cpu_s:
                seconds["forward"] = seconds.get("forward", 0.0) + clock.cpu_s
    seconds.update(parts.cpu_s)
    return seconds, sum(len(doc) for doc in docs)


def tokenizer_cpu_s(tokenizer, texts: Sequence[str], repeats: int) -> float:
    """Median CPU seconds of ``tokenizer`` over ``texts`` (after one warm-up pass)."""
    for text in texts:
        tokenizer(text)
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for text in texts:
            tokenizer(text)
        runs.append(time.process_time() - start)
    return median(runs)


def wordpiece_seconds(nlp, texts: Sequence[str], primer: Sequence[str], repeats: int) -> Dict[str, float]:
    """Median CPU seconds of the wordpiece batches of the pipeline's windows over
    ``texts``: the tokenizer's own call, the chunk cache emptied before each run,
    and the chunk cache primed with the windows of ``primer`` (notes seen earlier)."""
    from spacy_softprompt.encoder.wordpieces import chunk_cache, direct_wordpiece_batch, wordpiece_batch

    transformer = nlp.get_pipe("transformer")
    tokenizer, get_spans = transformer.model.tokenizer, transformer.model.attrs["get_spans"]
    batch = nlp.batch_size

    def windows(notes):
        docs = [nlp.make_doc(text) for text in notes]
        return [[s.text for doc_spans in get_spans(docs[i : i + batch]) for s in doc_spans] for i in range(0, len(docs), batch)]

    batches, primer_batches = windows(texts), windows(primer)
    cache = chunk_cache(tokenizer)

    def timed(call, before=lambda: None) -> float:
        runs = []
        for _ in range(repeats + 1):  # the first run warms up
            before()
            start = time.process_time()
            for window_texts in batches:
                call(tokenizer, window_texts)
            runs.append(time.process_time() - start)
        return median(runs[1:])

    def prime() -> None:
        cache.clear()
        for window_texts in primer_batches:
            wordpiece_batch(tokenizer, window_texts)

    out = {"tokenizer's own batch call": timed(direct_wordpiece_batch)}
    if cache is not None:
        out["chunk cache, no note seen before"] = timed(wordpiece_batch, cache.clear)
        out[f"chunk cache, primed with {len(primer)} other notes"] = timed(wordpiece_batch, prime)
    return out


def with_whitespace_special_cases(tokenizer):
    """A copy of ``tokenizer`` with spaCy's English whitespace special cases put
    back (``"\\n"``, ``"\\t"``, ``" "``): the clinical tokenizer before it left them out."""
    from spacy.lang.en import English

    copy = tokenizer.__class__(tokenizer.vocab)
    copy.from_bytes(tokenizer.to_bytes())
    rules = dict(copy.rules)
    rules.update({k: v for k, v in English.Defaults.tokenizer_exceptions.items() if k.isspace()})
    copy.rules = rules
    return copy


def per_words(seconds: float, words: int) -> float:
    return seconds * WORDS_UNIT / max(1, words)


# ------------------------------------------------------------------ interleaving
def interleaved(runners: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, List[Tuple[float, float]]]:
    """``(cpu_s, wall_s)`` of every run; the order rotates each round (A B, B A, ...)."""
    names = list(runners)
    runs: Dict[str, List[Tuple[float, float]]] = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            cpu, wall = time.process_time(), time.perf_counter()
            runners[name]()
            runs[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    return runs


def median(values: Sequence[float]) -> float:
    return float(numpy.median(numpy.asarray(values, dtype="float64")))


def prediction_counts(docs: list) -> Dict[str, int]:
    from spacy_softprompt.annotations import get_relations

    return {
        "words": sum(len(d) for d in docs),
        "entities": sum(len(d.ents) for d in docs),
        "relations": sum(len(get_relations(d)) for d in docs),
    }
