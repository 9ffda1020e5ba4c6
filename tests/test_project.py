"""project.yml: the main job's defaults and every mode/strategy/device it names resolve to a config;
docs/project.md holds the section `spacy project document` writes for it."""
from importlib.metadata import version
from pathlib import Path

import pytest
from thinc.api import Config

weasel_util = pytest.importorskip("weasel.util", reason="weasel (spaCy's project runner) is not installed")

ROOT = Path(__file__).resolve().parents[1]
SINGLE_PASS_STRATEGIES = ["finetune", "hard", "soft", "soft-frozen", "baseline-trf"]
MRC_STRATEGIES = ["hard", "soft", "soft-frozen"]


def _train_config(**overrides: str) -> Path:
    project = weasel_util.load_project_config(
        ROOT, interpolate=True, overrides={f"vars.{k}": v for k, v in overrides.items()}
    )
    train = next(c for c in project["commands"] if c["name"] == "train")
    return ROOT / train["deps"][0]


def test_main_job_trains_token_ner_soft_prompts_on_cpu():
    path = _train_config()
    assert path.name == "tok_soft_cpu.cfg"
    config = Config().from_disk(path, interpolate=False)
    assert config["nlp"]["pipeline"] == ["transformer", "token_ner", "relation_extractor"]
    model = config["components"]["transformer"]["model"]
    assert model["prompt_length"] > 0 and model["prompt_depth"] == "deep"
    assert model["freeze_backbone"] is False


def test_span_ner_head_is_one_variable_away():
    config = Config().from_disk(_train_config(mode=""), interpolate=False)
    assert config["nlp"]["pipeline"] == ["transformer", "ner", "relation_extractor"]


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize(
    "mode,strategy",
    [(m, s) for m in ("", "tok_") for s in SINGLE_PASS_STRATEGIES] + [("mrc_", s) for s in MRC_STRATEGIES],
)
def test_every_documented_combination_has_a_config(mode, strategy, device):
    path = _train_config(mode=mode, strategy=strategy, device=device)
    assert path.exists(), f"project.yml names {path.relative_to(ROOT)}, which scripts/make_configs*.py did not write"


WEASEL_SERIES = "0.4."  # the weasel of the pinned spaCy 3.7.5, which wrote docs/project.md


@pytest.mark.skipif(
    not version("weasel").startswith(WEASEL_SERIES),
    reason=f"docs/project.md is written by weasel {WEASEL_SERIES}x (spaCy 3.7); another version words it differently",
)
def test_project_section_of_the_docs_is_what_spacy_project_document_writes():
    from config_generator import load_generator

    documenter = load_generator("document_project")
    assert documenter.current() == documenter.render(), (
        "docs/project.md is stale: run python scripts/document_project.py"
    )
