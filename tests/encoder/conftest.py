"""Fixtures for the encoder tests (helpers live in encoder_helpers.py)."""
import pytest


@pytest.fixture(params=["megatron", "bert"])
def tiny_model(request, tiny_megatron, tiny_bert):
    return {"megatron": tiny_megatron, "bert": tiny_bert}[request.param]
