"""Show what a pipeline extracted: displaCy for the concepts, a table for the relations."""
import html
from typing import Iterable, Union

from spacy import displacy
from spacy.tokens import Doc

from .annotations import get_entities, get_relations


def render_relations_table(doc: Doc) -> str:
    """An HTML table of ``doc._.relations`` (label, first argument, second argument)."""
    rows = []
    for rel in get_relations(doc):
        (s1, e1, l1), (s2, e2, l2) = rel["arg1"], rel["arg2"]
        rows.append(
            "<tr><td>{}</td><td>{} <small>{}</small></td><td>{} <small>{}</small></td></tr>".format(
                html.escape(rel["label"]),
                html.escape(doc.text[s1:e1]),
                html.escape(l1),
                html.escape(doc.text[s2:e2]),
                html.escape(l2),
            )
        )
    head = "<tr><th>relation</th><th>argument 1</th><th>argument 2</th></tr>"
    return f'<table class="relations">{head}{"".join(rows)}</table>'


def render(docs: Union[Doc, Iterable[Doc]], page: bool = True) -> str:
    """HTML: each doc's concepts (all of them, overlapping ones included, via
    displaCy's span style) followed by its relation table."""
    docs = [docs] if isinstance(docs, Doc) else list(docs)
    parts = []
    for doc in docs:
        data = {
            "text": doc.text,
            "spans": [
                {"start_token": s.start, "end_token": s.end, "label": s.label_} for s in get_entities(doc)
            ],
            "tokens": [t.text for t in doc],
        }
        parts.append(displacy.render(data, style="span", manual=True, page=False))
        parts.append(render_relations_table(doc))
    body = "\n".join(parts)
    return f"<!DOCTYPE html><html><body>{body}</body></html>" if page else body
