"""Generated backbones of the GPU benchmark (random weights: speed and memory only).

* :func:`synthetic_megatron`: a MegatronBert of GatorTron-base's width (or
  smaller, for smoke runs) whose WordPiece vocabulary holds the synthetic
  notes' words, so a word is about one wordpiece as with a clinical vocabulary;
* :func:`large_config_folder` + :func:`built_on_device`: the GatorTron-large
  shape (56 x 3584, 8.9B parameters) as a config-only folder whose weights are
  created in bf16 directly on the device when the pipeline loads it.
"""
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator

#: GatorTron-large (8.9B): 56 layers, hidden 3584, 56 heads
LARGE_SHAPE = {"layers": 56, "hidden": 3584, "heads": 56}
EMBEDDING_ROWS = 50176  # GatorTron's (padded) vocabulary


def synthetic_megatron(workdir: Path, layers: int, hidden: int) -> str:
    """A random MegatronBert, ``layers`` x ``hidden`` (GatorTron-base: 24 x 1024,
    16 heads, 50,176 embedding rows); generated once per workdir."""
    import synthetic_notes

    from spacy_softprompt.testing import build_vocab, make_random_encoder

    path = Path(workdir) / f"gpu_megatron_L{layers}_H{hidden}_V{EMBEDDING_ROWS}"
    if not (path / "config.json").is_file():
        words = list(synthetic_notes.FILLER) + list(synthetic_notes.DRUGS)
        words += [w for _, text in synthetic_notes.ATTRS for w in text.split()]
        vocab = build_vocab(sorted(set(words)))
        make_random_encoder(path, "megatron-bert", num_layers=layers, hidden_size=hidden,
                            num_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                            max_position_embeddings=512, vocab=vocab, vocab_padding=EMBEDDING_ROWS - len(vocab))
    return str(path)


def large_config_folder(workdir: Path, shape: Dict[str, int]) -> Path:
    """config.json + WordPiece tokenizer of the large shape, no weights."""
    from transformers import BertTokenizerFast, MegatronBertConfig

    from spacy_softprompt.testing import build_vocab

    folder = Path(workdir) / f"large_L{shape['layers']}_H{shape['hidden']}_config_only"
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(build_vocab()) + "\n", encoding="utf8")
    MegatronBertConfig(
        vocab_size=EMBEDDING_ROWS, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], intermediate_size=4 * shape["hidden"], max_position_embeddings=512,
        type_vocab_size=2,
    ).save_pretrained(folder)
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    return folder


@contextmanager
def built_on_device(device: str) -> Iterator[None]:
    """While active, backbones load as random bf16 weights created on ``device``
    from their config (no weights on disk), without a checksum (the SHA-256 of
    18 GB of random weights is not what the benchmark measures)."""
    import torch

    from spacy_softprompt.encoder import backbone as backbone_mod

    def from_config(source, transformer_config, device_, dtype="bfloat16"):  # always bf16 here
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(source, return_dict=True)
        with torch.device(torch.device(device)):
            model = AutoModel.from_config(config, torch_dtype=torch.bfloat16)
        return model.eval()

    saved = backbone_mod._from_pretrained, backbone_mod.backbone_checksum
    backbone_mod._from_pretrained = from_config
    backbone_mod.backbone_checksum = lambda module: "random-large-shape"
    try:
        yield
    finally:
        backbone_mod._from_pretrained, backbone_mod.backbone_checksum = saved
