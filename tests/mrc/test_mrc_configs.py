"""The MRC configs: in sync with their generator, differ only in strategy values,
train two steps end to end with ``spacy train`` on a tiny random encoder, and
package into a loadable pipeline package."""
import json
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.util import load_config

from config_generator import generated_with_pinned_spacy, load_generator

from spacy_softprompt.annotations import make_relation, set_entities

from test_mrc_helpers import one_torch_thread  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
STRATEGIES = ["hard", "soft", "soft-frozen"]
MAX_BACKBONE_LEARN_RATE = load_generator("make_mrc_configs").MAX_BACKBONE_LEARN_RATE


def _generator():
    return load_generator("make_mrc_configs")


@generated_with_pinned_spacy
def test_config_files_match_generator():
    files = _generator().expected_files()
    assert sorted(files) == sorted(f"mrc_{s}_{d}.cfg" for s in STRATEGIES for d in ("cpu", "gpu"))
    for name, text in files.items():
        assert (CONFIGS / name).read_text(encoding="utf8") == text, f"configs/{name} is stale: run scripts/make_mrc_configs.py"


def _flatten(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and not key.endswith("loss_weights"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_strategies_differ_only_in_strategy_values():
    base = _flatten(load_config(CONFIGS / "mrc_hard_cpu.cfg", interpolate=False))
    allowed = {"training.optimizer.learn_rate.initial_rate"}
    for component in ("mrc_ner", "mrc_relations"):
        allowed |= {f"components.{component}.query_mode"}
        allowed |= {f"components.{component}.model.{k}" for k in ("prompt_length", "prompt_depth", "freeze_backbone")}
    # a frozen strategy trains its own recipe (make_configs.RECIPES), as in the single-pass configs
    recipe = {"training.max_steps", "training.patience", "training.eval_frequency"} | {
        f"training.optimizer.{rate}.{key}"
        for rate in ("learn_rate", "head_learn_rate", "prompt_learn_rate")
        for key in ("warmup_steps", "initial_rate")
    }
    recipes = load_generator("make_configs").RECIPES
    for strategy in STRATEGIES[1:]:
        other = _flatten(load_config(CONFIGS / f"mrc_{strategy}_cpu.cfg", interpolate=False))
        assert set(other) == set(base)
        changed = {k for k in base if base[k] != other[k]}
        may_change = allowed | (recipe if (strategy, "cpu") in recipes else set())
        assert changed and changed <= may_change, (strategy, changed - may_change)


def test_training_conventions_match_the_single_pass_configs():
    for strategy in STRATEGIES:
        for device in ("cpu", "gpu"):
            single = load_config(CONFIGS / f"{strategy}_{device}.cfg", interpolate=False)
            mrc = load_config(CONFIGS / f"mrc_{strategy}_{device}.cfg", interpolate=False)
            assert mrc["nlp"]["pipeline"] == ["mrc_ner", "mrc_relations"]
            for section in ("corpora", "system", "pretraining"):
                assert mrc[section] == single[section], section
            # the training section is the single pass's, except that the backbone's
            # peak rate is capped (a 2e-4 MRC run collapsed; make_mrc_configs.py)
            single_rate = single["training"]["optimizer"]["learn_rate"]["initial_rate"]
            mrc_rate = mrc["training"]["optimizer"]["learn_rate"]["initial_rate"]
            assert mrc_rate == min(single_rate, MAX_BACKBONE_LEARN_RATE)
            mrc["training"]["optimizer"]["learn_rate"]["initial_rate"] = single_rate
            assert mrc["training"] == single["training"]
            assert mrc["nlp"]["tokenizer"] == single["nlp"]["tokenizer"]
            assert {k: v for k, v in mrc["paths"].items() if k != "schema"} == single["paths"]
            assert mrc["training"]["optimizer"]["@optimizers"] == "spacy_softprompt.PromptAdam.v1"
    for device in ("cpu", "gpu"):
        mrc = load_config(CONFIGS / f"mrc_soft_{device}.cfg", interpolate=False)
        assert mrc["components"]["mrc_ner"]["scorer"] == {"@scorers": "spacy_softprompt.n2c2_scorer.v1"}
        assert mrc["initialize"]["components"]["mrc_ner"]["task_schema"] == "${paths.schema}"
    gpu = load_config(CONFIGS / "mrc_soft-frozen_gpu.cfg", interpolate=False)
    assert gpu["system"]["gpu_allocator"] == "pytorch"
    assert gpu["components"]["mrc_ner"]["model"]["mixed_precision"] is True


TRAIN_TEXTS = [
    ("aspirin 10 mg daily for fever", [("Drug", "aspirin"), ("Strength", "10 mg"), ("Frequency", "daily")]),
    ("heparin 5 ml twice after surgery", [("Drug", "heparin"), ("Strength", "5 ml"), ("Frequency", "twice")]),
    ("warfarin 2 mg daily was held", [("Drug", "warfarin"), ("Strength", "2 mg"), ("Frequency", "daily")]),
]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    nlp = spacy.blank("en")
    docs = []
    for text, ents in TRAIN_TEXTS:
        doc = nlp.make_doc(text)
        spans = [doc.char_span(text.index(s), text.index(s) + len(s), label=l) for l, s in ents]
        set_entities(doc, spans)
        doc._.relations = [make_relation(f"{s.label_}-Drug", s, spans[0]) for s in spans[1:]]
        docs.append(doc)
    path = tmp_path_factory.mktemp("corpus") / "tiny.spacy"
    DocBin(store_user_data=True, docs=docs).to_disk(path)
    return path


def _train(strategy, corpus, backbone, out, schema=None):
    from spacy.cli.train import train

    overrides = {
        "paths.train": str(corpus),
        "paths.dev": str(corpus),
        "paths.backbone": str(backbone),
        "paths.schema": schema,
        "training.max_steps": 2,
        "training.eval_frequency": 1,
        "training.optimizer.learn_rate.total_steps": 2,
        "training.optimizer.learn_rate.warmup_steps": 1,
        "components.mrc_ner.window_pieces": 24,
        "components.mrc_ner.model.hidden_width": 16,
        "components.mrc_relations.model.hidden_width": 16,
    }
    train(CONFIGS / f"mrc_{strategy}_cpu.cfg", out, use_gpu=-1, overrides=overrides)
    return out / "model-last"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_training_steps_per_strategy(strategy, tiny_corpus, tiny_megatron, tmp_path):
    schema = "n2c2_2018" if strategy == "hard" else None
    path = _train(strategy, tiny_corpus, tiny_megatron, tmp_path / strategy, schema=schema)
    nlp = spacy.load(path)
    assert nlp.pipe_names == ["mrc_ner", "mrc_relations"]
    ner, rel = nlp.get_pipe("mrc_ner"), nlp.get_pipe("mrc_relations")
    if schema:
        assert len(ner.labels) == 9 and len(rel.labels) == 8  # labels and questions from the schema
        assert ner.question("Drug").startswith("Which medications")
    else:
        assert set(ner.labels) == {"Drug", "Strength", "Frequency"}
        assert set(rel.labels) == {"Strength-Drug", "Frequency-Drug"}
    assert ner.encoder.backbone_frozen == (strategy == "soft-frozen")
    assert ner.encoder.prompt_length == (0 if strategy == "hard" else 20)
    meta = json.loads((path / "meta.json").read_text())
    assert "rels_strict_f" in meta["performance"] and "ents_strict_f" in meta["performance"]
    docs = list(nlp.pipe(["aspirin 10 mg daily", "heparin 5 ml twice"], batch_size=2))
    assert all(isinstance(doc._.relations, list) for doc in docs)


@pytest.mark.slow
def test_trained_mrc_pipeline_packages_as_a_wheel_and_runs_under_pipe(tiny_corpus, tiny_megatron, tmp_path):
    import subprocess
    import sys
    import zipfile

    path = _train("soft-frozen", tiny_corpus, tiny_megatron, tmp_path / "train")
    packages = tmp_path / "packages"
    packages.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "package", str(path), str(packages),
         "--name", "mrc_test", "--version", "0.0.1", "--build", "wheel", "--force"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheel = next(packages.rglob("*.whl"))
    archive = zipfile.ZipFile(wheel)
    for name in archive.namelist():  # safetensors only, no pickled tensors
        data = archive.read(name)
        assert b"_rebuild_tensor" not in data and b"torch._utils" not in data, f"pickled tensors in {name}"
    meta = json.loads(next(n for n in (packages.rglob("meta.json"))).read_text())
    assert any(req.startswith("spacy-softprompt") for req in meta["requirements"])
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    texts = ["aspirin 10 mg daily", "warfarin 2 mg daily was held"]
    code = (
        "import spacy, json; nlp = spacy.load('en_mrc_test');"
        f"docs = list(nlp.pipe({texts!r}, batch_size=2));"
        "print(json.dumps({'pipes': nlp.pipe_names, 'file': nlp.path.as_posix(),"
        " 'ents': [[[e.start_char, e.end_char, e.label_] for e in d.spans['entities']] for d in docs],"
        " 'rels': [d._.relations for d in docs]}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(target),
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["pipes"] == ["mrc_ner", "mrc_relations"] and info["file"].startswith(str(target))
    trained = list(spacy.load(path).pipe(texts))
    assert info["ents"] == [[[e.start_char, e.end_char, e.label_] for e in d.spans["entities"]] for d in trained]
    assert info["rels"] == [json.loads(json.dumps(d._.relations)) for d in trained]
