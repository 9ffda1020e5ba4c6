"""Fixtures for the data-layer tests: a blank English pipeline with the clinical tokenizer."""
import pytest


@pytest.fixture(scope="session")
def nlp():
    from spacy_softprompt.data.readers import blank_clinical_nlp

    return blank_clinical_nlp()
