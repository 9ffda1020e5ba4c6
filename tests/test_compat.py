"""An unsupported transformers fails with one clear message before the backbone runs."""
import pytest
from transformers import BertConfig, BertModel

from spacy_softprompt import compat
from spacy_softprompt.encoder import PromptedEncoder


def tiny_bert() -> BertModel:
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    return BertModel(config)


@pytest.mark.parametrize("version", ["4.30.0", "4.53.2", compat.TRANSFORMERS_TESTED])
def test_supported_versions_pass(version):
    compat.check_transformers(version)


@pytest.mark.parametrize("version", ["5.0.0", "5.0.0rc1", "5.24.0"])
def test_transformers_5_names_the_removed_tuple_prefix(version):
    with pytest.raises(compat.UnsupportedTransformersError) as info:
        compat.check_transformers(version)
    message = str(info.value)
    assert f"found transformers {version}" in message
    assert "past_key_values" in message
    assert compat.TRANSFORMERS_RANGE in message


@pytest.mark.parametrize("version", ["4.29.2", "4.57.1"])
def test_versions_outside_the_declared_range_fail(version):
    with pytest.raises(compat.UnsupportedTransformersError, match=compat.TRANSFORMERS_RANGE.replace(".", r"\.")):
        compat.check_transformers(version)


def test_installed_version_is_supported():
    compat.check_transformers()


def test_deep_prompt_encoder_refuses_transformers_5(monkeypatch):
    backbone = tiny_bert()
    PromptedEncoder(backbone, prompt_length=2, prompt_depth="deep")  # the installed one is fine
    monkeypatch.setattr(compat, "installed_transformers_version", lambda: "5.0.0")
    with pytest.raises(compat.UnsupportedTransformersError, match="past_key_values"):
        PromptedEncoder(backbone, prompt_length=2, prompt_depth="deep")


def test_cli_reports_it_as_a_one_line_error():
    from spacy_softprompt.cli import _user_errors

    assert issubclass(compat.UnsupportedTransformersError, _user_errors())
