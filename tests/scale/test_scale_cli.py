"""The annotate command: the local engine stays the default and never imports Ray."""
import json
import subprocess
import sys
import textwrap

import spacy

from scale_helpers import synthetic_notes, write_jsonl


def test_local_engine_is_the_default_and_does_not_import_ray(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "Drug", "pattern": "aspirin"}])
    nlp.to_disk(tmp_path / "model")
    src = write_jsonl(tmp_path / "in.jsonl", synthetic_notes(4))
    script = textwrap.dedent(
        f"""
        import sys
        from spacy_softprompt.cli import main
        try:
            main(["annotate", {str(tmp_path / "model")!r}, {str(src)!r}, {str(tmp_path / "out.jsonl")!r}, "--format", "jsonl", "-q"])
        except SystemExit as stop:
            assert not stop.code, stop.code
        print("RAY_IMPORTED" if any(m == "ray" or m.startswith("ray.") for m in sys.modules) else "NO_RAY")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "NO_RAY"
    records = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == list(synthetic_notes(4))
