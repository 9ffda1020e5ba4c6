"""Configs resolve through entry points; the PromptAdam optimizer; `spacy train`."""
import subprocess
import sys

import numpy
import pytest
from thinc.api import Config, Optimizer, registry

from spacy_softprompt.optimizers import PromptAdam, PromptOptimizer, is_prompt_key

CONFIG = """
[paths]
train = null
dev = null
backbone = null

[system]
seed = 0
gpu_allocator = null

[nlp]
lang = "en"
pipeline = ["transformer","ner"]
batch_size = 8

[components]

[components.transformer]
factory = "transformer"
max_batch_items = 4096

[components.transformer.model]
@architectures = "spacy_softprompt.SoftPromptTransformerModel.v1"
name = ${paths.backbone}
tokenizer_config = {"use_fast": true}
transformer_config = {}
mixed_precision = false
grad_scaler_config = {}
prompt_length = 4
prompt_depth = "deep"
prompt_init = "text"
prompt_init_text = "find the drugs and their doses"
prompt_names = ["default"]
reparameterize = true
reparameterize_hidden_size = 16
hard_prompt = null
freeze_backbone = true
save_backbone = false
gradient_checkpointing = true
mixed_precision_dtype = "float16"
init_seed = 0

[components.transformer.model.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 64
stride = 48

[components.ner]
factory = "ner"

[components.ner.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "ner"
extra_state_tokens = false
hidden_width = 16
maxout_pieces = 2
use_upper = false
nO = null

[components.ner.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[components.ner.model.tok2vec.pooling]
@layers = "reduce_mean.v1"

[corpora]

[corpora.train]
@readers = "spacy.Corpus.v1"
path = ${paths.train}

[corpora.dev]
@readers = "spacy.Corpus.v1"
path = ${paths.dev}

[training]
seed = ${system.seed}
gpu_allocator = ${system.gpu_allocator}
dropout = 0.1
accumulate_gradient = 1
patience = 100
max_epochs = 0
max_steps = 2
eval_frequency = 2
frozen_components = []
annotating_components = []
dev_corpus = "corpora.dev"
train_corpus = "corpora.train"

[training.batcher]
@batchers = "spacy.batch_by_padded.v1"
discard_oversize = false
size = 2000
buffer = 256

[training.optimizer]
@optimizers = "spacy_softprompt.PromptAdam.v1"
beta1 = 0.9
beta2 = 0.999
L2_is_weight_decay = true
L2 = 0.01
grad_clip = 1.0
use_averages = true
eps = 0.00000001

[training.optimizer.learn_rate]
@schedules = "warmup_linear.v1"
warmup_steps = 1
total_steps = 2
initial_rate = 0.00005

[training.optimizer.prompt_learn_rate]
@schedules = "warmup_linear.v1"
warmup_steps = 1
total_steps = 2
initial_rate = 0.03

[training.score_weights]
ents_f = 1.0

[initialize]
vectors = null
"""


def test_spacy_train_resolves_the_config_through_entry_points(tiny_megatron, tmp_path):
    """`spacy train` in a fresh process, without --code and without importing
    spacy_softprompt: architecture and optimizer resolve through entry points;
    schedules, averages, evaluation, model-best/model-last saved prompt-only."""
    import spacy
    from spacy.tokens import DocBin

    from encoder_helpers import ENTITIES, TEXTS

    nlp = spacy.blank("en")
    db = DocBin()
    for text, ents in zip(TEXTS, ENTITIES):
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=label) for s, e, label in ents]
        db.add(doc)
    db.to_disk(tmp_path / "train.spacy")
    (tmp_path / "config.cfg").write_text(CONFIG)
    cmd = [
        sys.executable, "-m", "spacy", "train", "config.cfg", "--output", "out",
        "--paths.train", "train.spacy", "--paths.dev", "train.spacy", "--paths.backbone", str(tiny_megatron),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    model_file = tmp_path / "out" / "model-last" / "transformer" / "model"
    assert model_file.stat().st_size < 200_000  # prompt + tokenizer only
    loaded = spacy.load(tmp_path / "out" / "model-best")
    enc = loaded.get_pipe("transformer").model.encoder
    assert not enc.prompt_encoder.reparameterize and enc.backbone_frozen and enc.prompt_depth == "deep"
    assert enc.gradient_checkpointing
    assert loaded("patient was given aspirin")._.trf_data.model_output.last_hidden_state.shape[-1] == 32


def test_prompt_adam_is_a_thinc_optimizer_with_two_learning_rates():
    optimizer = PromptAdam(learn_rate=1e-4, prompt_learn_rate=1e-1)
    assert isinstance(optimizer, Optimizer) and isinstance(optimizer, PromptOptimizer)
    prompt_key = (1, "prompt_encoder.table")
    other_key = (1, "backbone.encoder.layer.0.attention.self.key.weight")
    assert is_prompt_key(prompt_key) and is_prompt_key((3, "encoder.prompt_encoder.embedding"))
    assert not is_prompt_key(other_key) and not is_prompt_key((5, "W")) and not is_prompt_key((1, "my_prompt_encoder_x"))
    weights = {key: numpy.zeros((4,), dtype="f") for key in (prompt_key, other_key)}
    for key in weights:
        new, _ = optimizer(key, weights[key].copy(), numpy.ones((4,), dtype="f"))
        weights[key] = new
    # Adam's first step moves each weight by about the learning rate
    numpy.testing.assert_allclose(-weights[prompt_key], 1e-1, rtol=1e-3)
    numpy.testing.assert_allclose(-weights[other_key], 1e-4, rtol=1e-3)
    assert optimizer.learn_rate == 1e-4 and optimizer.prompt_learn_rate == 1e-1
    assert set(optimizer.averages) == {prompt_key, other_key}
    assert optimizer.last_score is None


def test_prompt_adam_schedules_and_config():
    cfg = Config().from_str(
        """
        [optimizer]
        @optimizers = "spacy_softprompt.PromptAdam.v1"
        learn_rate = [0.1, 0.2, 0.3]
        L2 = 0.01
        prompt_L2 = 0.0
        use_averages = false

        [optimizer.prompt_learn_rate]
        @schedules = "constant_then.v1"
        rate = 0.5
        steps = 1

        [optimizer.prompt_learn_rate.schedule]
        @schedules = "constant.v1"
        rate = 0.7
        """
    )
    optimizer = registry.resolve(cfg)["optimizer"]
    assert (optimizer.learn_rate, optimizer.prompt_learn_rate) == (0.1, 0.5)
    optimizer.step_schedules()
    assert (optimizer.learn_rate, optimizer.prompt_learn_rate) == pytest.approx((0.2, 0.7))
    assert optimizer.averages is None
    # prompt_L2 = 0: no weight decay on the prompt, the backbone still decays
    for key, expect_decay in (((1, "prompt_encoder.table"), False), ((1, "backbone.x"), True)):
        weights, _ = optimizer(key, numpy.ones((3,), dtype="f"), numpy.zeros((3,), dtype="f"))
        assert (weights[0] < 1.0) == expect_decay
    assert optimizer.L2 == 0.01


def test_prompt_adam_head_learning_rate_for_thinc_layers():
    from spacy_softprompt.optimizers import is_head_key

    optimizer = PromptAdam(learn_rate=1e-4, prompt_learn_rate=1e-1, head_learn_rate=1e-2, use_averages=False)
    keys = {
        "prompt": (1, "prompt_encoder.table"),
        "backbone": (1, "backbone.encoder.layer.0.attention.self.key.weight"),
        "head": (7, "W"),
    }
    assert is_head_key(keys["head"]) and not is_head_key(keys["backbone"]) and not is_head_key(keys["prompt"])
    moved = {}
    for name, key in keys.items():
        new, _ = optimizer(key, numpy.zeros((4,), dtype="f"), numpy.ones((4,), dtype="f"))
        moved[name] = float(-new[0])
    assert moved == pytest.approx({"prompt": 1e-1, "backbone": 1e-4, "head": 1e-2}, rel=1e-3)
    assert optimizer.learn_rate == 1e-4  # restored after each group
    # Without head_learn_rate, heads use learn_rate (the v1 behaviour).
    plain = PromptAdam(learn_rate=1e-4, prompt_learn_rate=1e-1, use_averages=False)
    new, _ = plain(keys["head"], numpy.zeros((4,), dtype="f"), numpy.ones((4,), dtype="f"))
    assert float(-new[0]) == pytest.approx(1e-4, rel=1e-3)
