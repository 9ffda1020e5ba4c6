"""The shipped configs: in sync with their generator, differ only in strategy values,
and each strategy trains two steps end to end on a tiny random encoder."""
import json
from pathlib import Path

import pytest
import spacy
from spacy.util import load_config

from config_generator import generated_with_pinned_spacy, load_generator

from spacy_softprompt.testing import write_toy_corpus

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
STRATEGIES = ["finetune", "hard", "soft", "soft-frozen", "soft-lora"]
#: what a frozen strategy's recipe may change besides the strategy values (make_configs.RECIPES)
RECIPE_KEYS = {
    "training.max_steps",
    "training.patience",
    "training.eval_frequency",
    *(f"training.optimizer.{rate}.{key}" for rate in ("learn_rate", "head_learn_rate", "prompt_learn_rate")
      for key in ("warmup_steps", "initial_rate")),
}
ADAPTER_KEYS = {"components.transformer.model.adapter_rank", "components.transformer.model.adapter_alpha"}


def _generator():
    return load_generator("make_configs")


@generated_with_pinned_spacy
def test_config_files_match_generator():
    for name, text in _generator().expected_files().items():
        assert (CONFIGS / name).read_text(encoding="utf8") == text, f"configs/{name} is stale: run scripts/make_configs.py"


def _flatten(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_strategies_differ_only_in_a_few_values():
    base = _flatten(load_config(CONFIGS / "finetune_cpu.cfg", interpolate=False))
    allowed = {
        "components.transformer.model.prompt_length",
        "components.transformer.model.prompt_depth",
        "components.transformer.model.hard_prompt",
        "components.transformer.model.freeze_backbone",
    }
    recipes = _generator().RECIPES
    for strategy in STRATEGIES[1:]:
        other = _flatten(load_config(CONFIGS / f"{strategy}_cpu.cfg", interpolate=False))
        adapters = strategy == "soft-lora"
        assert set(other) == set(base) | (ADAPTER_KEYS if adapters else set())
        changed = {k for k in other if base.get(k) != other[k]}
        may_change = allowed | (RECIPE_KEYS if (strategy, "cpu") in recipes else set())
        if adapters:
            may_change |= ADAPTER_KEYS | {"components.transformer.model.@architectures"}
            assert other["components.transformer.model.@architectures"].endswith(".v2")
        assert changed and changed <= may_change, (strategy, changed - may_change)


def test_frozen_recipes_are_hotter_and_longer_than_fine_tuning():
    base = load_config(CONFIGS / "soft_cpu.cfg", interpolate=False)["training"]
    for strategy in ("soft-frozen", "soft-lora"):
        cfg = load_config(CONFIGS / f"{strategy}_cpu.cfg", interpolate=False)["training"]
        assert cfg["max_steps"] > base["max_steps"]
        assert cfg["patience"] >= base["patience"]
        for rate in ("head_learn_rate", "prompt_learn_rate"):
            assert cfg["optimizer"][rate]["initial_rate"] > base["optimizer"][rate]["initial_rate"]


def test_token_ner_configs_swap_only_the_concept_head():
    for name in [f"{s}_{d}.cfg" for s in STRATEGIES + ["baseline-trf"] for d in ("cpu", "gpu")]:
        ner = load_config(CONFIGS / name, interpolate=False)
        tok = load_config(CONFIGS / f"tok_{name}", interpolate=False)
        assert tok["nlp"]["pipeline"] == ["transformer", "token_ner", "relation_extractor"]
        assert tok["components"]["token_ner"]["model"]["tok2vec"] == ner["components"]["ner"]["model"]["tok2vec"]
        del ner["components"]["ner"], tok["components"]["token_ner"]
        del ner["nlp"]["pipeline"], tok["nlp"]["pipeline"]
        assert _flatten(tok) == _flatten(ner), name


def test_unknown_concept_head_is_an_error():
    with pytest.raises(ValueError, match="concept_head"):
        _generator().render("soft", "cpu", "crf")


def test_gpu_configs_use_pytorch_allocator_and_mixed_precision():
    for strategy in STRATEGIES:
        cfg = load_config(CONFIGS / f"{strategy}_gpu.cfg", interpolate=False)
        assert cfg["system"]["gpu_allocator"] == "pytorch"
        assert cfg["components"]["transformer"]["model"]["mixed_precision"] is True
        # the soft-prompt encoder runs (and infers) in half precision on the GPU, and says which
        assert cfg["components"]["transformer"]["model"]["mixed_precision_dtype"] == "float16"
        cpu = load_config(CONFIGS / f"{strategy}_cpu.cfg", interpolate=False)
        assert cpu["components"]["transformer"]["model"]["mixed_precision"] is False


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return write_toy_corpus(tmp_path_factory.mktemp("corpus") / "tiny.spacy")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES + ["baseline-trf", "tok_soft", "tok_soft-frozen", "tok_soft-lora"])
def test_two_training_steps_per_strategy(strategy, tiny_corpus, tiny_megatron, tmp_path):
    from spacy.cli.train import train

    import spacy_softprompt  # noqa: F401  (token_ner without installed entry points)

    if strategy.endswith("soft-lora"):
        pytest.importorskip("peft", reason="soft-lora needs the peft extra")
    out = tmp_path / strategy
    overrides = {
        "paths.train": str(tiny_corpus),
        "paths.dev": str(tiny_corpus),
        "paths.backbone": str(tiny_megatron),
        "training.max_steps": 2,
        "training.eval_frequency": 1,
        "training.optimizer.learn_rate.total_steps": 2,
        "training.optimizer.learn_rate.warmup_steps": 1,
        "components.transformer.model.get_spans.window": 24,
        "components.transformer.model.get_spans.stride": 16,
    }
    if strategy.endswith("hard"):
        overrides["components.transformer.model.hard_prompt"] = "find drugs"
    train(CONFIGS / f"{strategy}_cpu.cfg", out, use_gpu=-1, overrides=overrides)
    nlp = spacy.load(out / "model-last")
    head = "token_ner" if strategy.startswith("tok_") else "ner"
    assert nlp.pipe_names == ["transformer", head, "relation_extractor"]
    assert set(nlp.get_pipe("relation_extractor").labels) == {"Strength-Drug", "Frequency-Drug"}
    meta = json.loads((out / "model-last" / "meta.json").read_text())
    assert "rels_strict_f" in meta["performance"] and "ents_strict_f" in meta["performance"]
    doc = nlp("aspirin 10 mg daily")
    assert isinstance(doc._.relations, list)
