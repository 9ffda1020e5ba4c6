"""Write the spaCy project's own section of docs/project.md with `spacy project document`.

The section sits between weasel's markers; the text around it is kept. It is
rendered from a copy of project.yml alone, so the result does not depend on
which assets happen to be linked in this checkout. ``tests/test_project.py``
fails when the file is out of date: run ``python scripts/document_project.py``.
"""
import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

from weasel.cli.document import MARKER_END, MARKER_START, project_document

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "project.md"
START, END = MARKER_START.format(tag="WEASEL"), MARKER_END.format(tag="WEASEL")


def render(project_yml: Path = ROOT / "project.yml") -> str:
    """The generated section, markers included."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(project_yml, Path(tmp) / "project.yml")
        out = Path(tmp) / "section.md"
        with contextlib.redirect_stdout(io.StringIO()):  # weasel's 'Saved ...' line
            project_document(Path(tmp), out, no_emoji=True)
        return out.read_text(encoding="utf8").strip()


def current(doc: Path = DOC) -> str:
    """The section now in ``doc``, markers included."""
    text = doc.read_text(encoding="utf8")
    return text[text.index(START) : text.index(END) + len(END)]


def main() -> int:
    text = DOC.read_text(encoding="utf8")
    DOC.write_text(text.replace(current(DOC), render()), encoding="utf8")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
