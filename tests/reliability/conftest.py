"""Fixtures for the reliability suite (helpers live in reliability_helpers.py)."""
import pytest


@pytest.fixture(scope="session")
def clinical_nlp():
    """A blank English pipeline with the clinical tokenizer (what conversion uses)."""
    from spacy_softprompt.data.readers import blank_clinical_nlp

    return blank_clinical_nlp()
