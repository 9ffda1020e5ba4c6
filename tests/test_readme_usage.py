"""The README's "Use a trained pipeline" snippet runs as written, on a tiny trained
pipeline saved where the main job saves its own, and its model path is the one the
main job's project.yml writes."""
import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _usage_snippet() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    section = readme.split("## Use a trained pipeline", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's usage section should hold one python block"
    return blocks[0]


def test_usage_snippet_names_the_main_jobs_output():
    weasel_util = pytest.importorskip("weasel.util", reason="weasel (spaCy's project runner) is not installed")
    project = weasel_util.load_project_config(ROOT, interpolate=True)
    model_dir = f"training/{project['vars']['run']}/model-best"
    assert f'spacy.load("{model_dir}")' in _usage_snippet()


def test_usage_snippet_runs_and_prints_concepts_and_relations(trained, tmp_path, monkeypatch):
    nlp, texts = trained
    snippet = _usage_snippet()
    model_dir = tmp_path / re.search(r'spacy\.load\("([^"]+)"\)', snippet).group(1)
    model_dir.parent.mkdir(parents=True)
    nlp.to_disk(model_dir)
    # the toy pipeline knows the toy vocabulary: ask it about a toy note instead of the README's
    text = re.search(r'nlp\("([^"]+)"\)', snippet).group(1)
    snippet = snippet.replace(text, texts[0])
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "README.md", "exec"), namespace)
    doc = namespace["doc"]
    lines = printed.getvalue().splitlines()
    entity_lines = [f"{span.label_} {span.text}" for span in doc.spans["entities"]]
    assert entity_lines, "the trained toy pipeline should find concepts in a toy note"
    assert lines[: len(entity_lines)] == entity_lines
    relation_line = lines[len(entity_lines)]
    assert relation_line.startswith("[") and all(
        f'"{doc.text[r["arg1"][0]:r["arg1"][1]]}"' in relation_line for r in namespace["get_relations"](doc)
    )
