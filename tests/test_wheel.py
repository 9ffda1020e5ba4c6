"""A trained pipeline packages as a wheel that loads by name outside the training folder
and predicts what the trained pipeline predicts in process."""
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
        REPO / "configs" / "tok_soft-frozen_cpu.cfg",
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
    texts = ["aspirin 10 mg daily", "warfarin 2 mg daily was held", "heparin 5000 units twice daily for 3 days"]
    code = (
        "import spacy, json; nlp = spacy.load('en_softprompt_test');"
        f"docs = list(nlp.pipe({texts!r}, batch_size=2));"
        "print(json.dumps({'pipes': nlp.pipe_names, 'file': nlp.path.as_posix(),"
        " 'ents': [[[e.start_char, e.end_char, e.label_] for e in d.spans['entities']] for d in docs],"
        " 'rels': [d._.relations for d in docs]}))"
    )
    env_path = str(target)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path / "site"),
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["pipes"] == ["transformer", "token_ner", "relation_extractor"]
    assert info["file"].startswith(env_path)
    trained = list(spacy.load(out / "model-best").pipe(texts, batch_size=2))
    expected_ents = [[[e.start_char, e.end_char, e.label_] for e in d.spans["entities"]] for d in trained]
    assert any(expected_ents), "the trained pipeline predicts no entity: nothing to compare"
    assert info["ents"] == expected_ents
    assert info["rels"] == [json.loads(json.dumps(d._.relations)) for d in trained]
