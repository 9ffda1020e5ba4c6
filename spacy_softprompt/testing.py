"""Small random encoders for tests and benchmarks (no hub, no download).

``make_random_encoder`` writes a Hugging Face model folder (config, safetensors
weights, WordPiece tokenizer) that ``AutoModel``/``AutoTokenizer`` load like a
real checkpoint, e.g. a 2-layer ``MegatronBertConfig`` (GatorTron's class) or a
24-layer/1024-hidden one shaped like GatorTron-base for benchmarks.
"""
import string
from pathlib import Path
from typing import Iterable, List, Optional, Union

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

_CLINICAL_WORDS = (
    "patient was given mg of aspirin daily for pain and fever the dose twice oral "
    "iv po bid tid qd prn tablet tablets injection days weeks history no denies "
    "nausea rash headache heparin warfarin insulin metformin after before with "
    "started stopped mg/kg ml hours developed severe mild blood pressure"
).split()


def build_vocab(extra_words: Iterable[str] = ()) -> List[str]:
    """A WordPiece vocabulary: specials, characters (and ## forms), common words."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = list(SPECIAL_TOKENS)
    vocab += chars + ["##" + c for c in string.ascii_lowercase + string.digits]
    for word in list(_CLINICAL_WORDS) + list(extra_words):
        if word not in vocab:
            vocab.append(word)
    return vocab


def make_random_encoder(
    path: Union[str, Path],
    model_type: str = "megatron-bert",
    num_layers: int = 2,
    hidden_size: int = 32,
    num_heads: int = 2,
    intermediate_size: Optional[int] = None,
    max_position_embeddings: int = 128,
    vocab: Optional[List[str]] = None,
    vocab_padding: int = 0,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised encoder + tokenizer to ``path`` and return it.

    ``vocab_padding`` adds unused embedding rows, as GatorTron has (50,176 rows
    for 50,101 tokens).
    """
    import torch
    from transformers import AutoModel, BertConfig, BertTokenizerFast, MegatronBertConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = vocab or build_vocab()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf8")
    config_cls = {"megatron-bert": MegatronBertConfig, "bert": BertConfig}[model_type]
    config = config_cls(
        vocab_size=len(vocab) + vocab_padding,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=2,
    )
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = max_position_embeddings
    tokenizer.save_pretrained(path)
    return path


TOY_TEXTS = [
    ("aspirin 10 mg daily for fever", [("Drug", "aspirin"), ("Strength", "10 mg"), ("Frequency", "daily")]),
    ("heparin 5 ml twice after surgery", [("Drug", "heparin"), ("Strength", "5 ml"), ("Frequency", "twice")]),
    ("warfarin 2 mg daily was held", [("Drug", "warfarin"), ("Strength", "2 mg"), ("Frequency", "daily")]),
]


def toy_docs(nlp=None):
    """Three annotated toy docs: Drug/Strength/Frequency entities and
    ``Strength-Drug`` / ``Frequency-Drug`` relations (arg1 the attribute)."""
    import spacy

    from .annotations import make_relation, set_entities

    nlp = nlp or spacy.blank("en")
    docs = []
    for text, ents in TOY_TEXTS:
        doc = nlp.make_doc(text)
        spans = [doc.char_span(text.index(s), text.index(s) + len(s), label=l) for l, s in ents]
        set_entities(doc, spans)
        doc._.relations = [make_relation(f"{s.label_}-Drug", s, spans[0]) for s in spans[1:]]
        docs.append(doc)
    return docs


def write_toy_corpus(path: Union[str, Path]) -> Path:
    """The toy docs as a ``.spacy`` DocBin (user data kept)."""
    from spacy.tokens import DocBin

    path = Path(path)
    DocBin(store_user_data=True, docs=toy_docs()).to_disk(path)
    return path
