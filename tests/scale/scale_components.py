"""Pipeline components for the scale tests, loaded by workers through ``code=``.

* ``test_scale_relations``: a ``Strength-Drug`` relation from each Strength to the nearest Drug;
* ``test_scale_explode``: a note with BOOM raises an error that quotes the note;
* ``test_scale_kill``: a note with CRASH kills the worker process while ``flag``
  does not exist (``once``: the kill first creates ``flag``, so it happens once).
"""
import os
from pathlib import Path

from spacy.language import Language

from spacy_softprompt.annotations import make_relation


@Language.component("test_scale_relations")
def relations(doc):
    drugs = [e for e in doc.ents if e.label_ == "Drug"]
    doc._.relations = [
        make_relation("Strength-Drug", ent, min(drugs, key=lambda d: abs(d.start - ent.start)))
        for ent in doc.ents
        if ent.label_ == "Strength" and drugs
    ]
    return doc


@Language.component("test_scale_explode")
def explode(doc):
    if "BOOM" in doc.text:
        raise ValueError(f"cannot handle {doc[0].text} here")
    return doc


@Language.factory("test_scale_kill", default_config={"flag": "", "once": True})
def make_kill(nlp, name, flag: str, once: bool):
    def kill(doc):
        if "CRASH" in doc.text and not Path(flag).exists():
            if once:
                Path(flag).touch()
            os._exit(17)
        return doc

    return kill
