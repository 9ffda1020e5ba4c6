"""A trained pipeline packages as a wheel that loads by name outside the training folder."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import spacy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_wheel_builds_installs_and_loads(tiny_megatron, tmp_path):
    from spacy.cli.train import train

    from spacy_softprompt.testing import write_toy_corpus

    corpus = write_toy_corpus(tmp_path / "tiny.spacy")
    out = tmp_path / "train"
    train(
        REPO / "configs" / "soft-frozen_cpu.cfg",
        out,
        use_gpu=-1,
        overrides={
            "paths.train": str(corpus),
            "paths.dev": str(corpus),
            "paths.backbone": str(tiny_megatron),
            "training.max_steps": 2,
            "training.eval_frequency": 1,
            "components.transformer.model.get_spans.window": 24,
            "components.transformer.model.get_spans.stride": 16,
        },
    )
    packages = tmp_path / "packages"
    packages.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "package", str(out / "model-best"), str(packages),
         "--name", "softprompt_test", "--version", "0.0.1", "--build", "wheel", "--force"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheel = next(packages.rglob("*.whl"))
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert not any(n.endswith((".pt", ".pth", ".pkl", ".pickle", "pytorch_model.bin")) for n in names)
    for name in names:  # torch.save pickles carry these names; safetensors never do
        data = archive.read(name)
        assert b"_rebuild_tensor" not in data and b"torch._utils" not in data, f"pickled tensors in {name}"
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    code = (
        "import spacy, json, sys; nlp = spacy.load('en_softprompt_test');"
        "doc = nlp('aspirin 10 mg daily');"
        "print(json.dumps({'pipes': nlp.pipe_names, 'file': nlp.path.as_posix(), 'rels': isinstance(doc._.relations, list)}))"
    )
    env_path = str(target)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path / "site"),
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["pipes"] == ["transformer", "ner", "relation_extractor"]
    assert info["file"].startswith(env_path)
    assert info["rels"] is True
