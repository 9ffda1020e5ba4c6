"""Synthetic notes for the benchmarks: filler text with a drug and three of its
attributes every ~25 words, as n2c2-style entities and relations."""

FILLER = (
    "the patient was seen in clinic today and reports feeling better overall with no new complaints "
    "blood pressure was stable and the plan was discussed with the family before discharge"
).split()
ATTRS = [("Strength", "10 mg"), ("Frequency", "daily"), ("Route", "po")]
DRUGS = ["aspirin", "heparin", "metformin", "warfarin", "insulin", "lisinopril"]


def note(n_words: int, seed: int):
    """Text plus (start_char, end_char, label) entities and n2c2-style relations."""
    words, ents, rels = [], [], []
    pos = 0
    i = 0
    while len(words) < n_words:
        if i % 25 == 0:
            drug = DRUGS[(seed + i) % len(DRUGS)]
            span_words = [(drug, "Drug")] + [(text, label) for label, text in ATTRS]
            drug_key = None
            for text, label in span_words:
                key = (pos, pos + len(text), label)
                ents.append(key)
                if label == "Drug":
                    drug_key = key
                else:
                    rels.append((f"{label}-Drug", key, drug_key))
                words.append(text)
                pos += len(text) + 1
                i += len(text.split())
        else:
            w = FILLER[(seed * 7 + i) % len(FILLER)]
            words.append(w)
            pos += len(w) + 1
            i += 1
    return " ".join(words), ents, rels


def make_docs(nlp, notes, with_entities: bool):
    """spaCy docs of ``notes``; with their entities and relations when asked."""
    from spacy_softprompt.annotations import make_relation, set_entities

    docs = []
    for text, ents, rels in notes:
        doc = nlp.make_doc(text)
        if with_entities:
            set_entities(doc, [doc.char_span(s, e, label=l) for s, e, l in ents])
            doc._.relations = [make_relation(label, a1, a2) for label, a1, a2 in rels]
        docs.append(doc)
    return docs


def make_examples(nlp, notes):
    """Training examples (raw doc, annotated reference) of ``notes``."""
    from spacy.training import Example

    return [Example(nlp.make_doc(t), ref) for (t, _, _), ref in zip(notes, make_docs(nlp, notes, True))]
