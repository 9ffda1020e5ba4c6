"""Prompt tables: the only trainable part of a soft prompt.

A :class:`PromptTable` holds ``n_prompts`` named prompts of ``length`` vectors
of ``width`` each (``width = hidden`` for input prompts, ``2 * layers * hidden``
for deep prompts, laid out ``[layer][key|value][hidden]``).  Optionally the
table is *reparameterised* (prefix projection, as in prefix-tuning /
P-tuning v2): a small input table goes through a two-layer MLP.  The MLP only
exists during training; :meth:`PromptTable.folded` turns it into a plain table
holding the MLP's output, which is what gets saved.

The initialisers return vectors in the backbone's *input-embedding* space
(``[n_prompts, length, hidden]``); :class:`~.model.PromptedEncoder` turns them
into key/value prefixes for deep prompts.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

PROMPT_INITS = ("text", "vocab", "random")


class PromptTable(nn.Module):
    """``n_prompts`` prompts of ``length`` x ``width`` trainable values.

    ``forward(prompt_ids: LongTensor[B]) -> Tensor[B, length, width]``.
    """

    def __init__(
        self,
        n_prompts: int,
        length: int,
        width: int,
        *,
        reparameterize: bool = False,
        hidden_size: int = 512,
        input_width: Optional[int] = None,
    ):
        super().__init__()
        if n_prompts < 1 or length < 0 or width < 1:
            raise ValueError(f"bad prompt table shape: n_prompts={n_prompts}, length={length}, width={width}")
        self.n_prompts = n_prompts
        self.length = length
        self.width = width
        self.reparameterize = bool(reparameterize)
        if self.reparameterize:
            input_width = input_width or width
            self.embedding = nn.Parameter(torch.zeros(n_prompts, length, input_width))
            self.mlp = nn.Sequential(
                nn.Linear(input_width, hidden_size),
                nn.Tanh(),
                nn.Linear(hidden_size, width),
            )
        else:
            self.table = nn.Parameter(torch.zeros(n_prompts, length, width))

    @property
    def input_width(self) -> int:
        return self.embedding.shape[-1] if self.reparameterize else self.width

    def full(self) -> torch.Tensor:
        """All prompts, ``[n_prompts, length, width]``."""
        if self.reparameterize:
            return self.mlp(self.embedding)
        return self.table

    def forward(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        return self.full().index_select(0, prompt_ids)

    @torch.no_grad()
    def set_input_vectors(self, vectors: torch.Tensor) -> None:
        """Set the table (or, when reparameterised, the MLP's input table)."""
        target = self.embedding if self.reparameterize else self.table
        if tuple(vectors.shape) != tuple(target.shape):
            raise ValueError(f"prompt init has shape {tuple(vectors.shape)}, expected {tuple(target.shape)}")
        target.copy_(vectors.to(target.dtype))

    @torch.no_grad()
    def folded(self) -> "PromptTable":
        """A plain table with this table's current values (MLP folded in)."""
        if not self.reparameterize:
            return self
        plain = PromptTable(self.n_prompts, self.length, self.width)
        plain.to(device=self.embedding.device)
        plain.table.data = self.full().detach().clone().to(self.embedding.dtype)
        return plain


def _real_rows(embedding: torch.Tensor, num_real_tokens: Optional[int]) -> torch.Tensor:
    n = embedding.shape[0] if num_real_tokens is None else min(int(num_real_tokens), embedding.shape[0])
    return embedding[:n]


@torch.no_grad()
def random_prompt_vectors(
    embedding: torch.Tensor,
    n_prompts: int,
    length: int,
    *,
    num_real_tokens: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Gaussian vectors scaled to the (real rows of the) embedding table's
    per-dimension mean and standard deviation."""
    rows = _real_rows(embedding, num_real_tokens).float()
    mean = rows.mean(0)
    std = rows.std(0)
    noise = torch.randn((n_prompts, length, rows.shape[1]), generator=generator, device="cpu")
    return noise.to(rows.device) * std + mean


def sample_vocab_ids(
    length: int,
    num_real_tokens: int,
    *,
    exclude_ids: Sequence[int] = (),
    generator: Optional[torch.Generator] = None,
) -> List[int]:
    """``length`` token ids drawn from the real vocabulary (``0 .. num_real_tokens-1``,
    never a padding row of an over-sized embedding table), without special tokens,
    without replacement while possible."""
    excluded = set(int(i) for i in exclude_ids)
    candidates = torch.tensor([i for i in range(int(num_real_tokens)) if i not in excluded], dtype=torch.long)
    if len(candidates) == 0:
        raise ValueError("no vocabulary rows left to sample prompt initialisations from")
    if length <= len(candidates):
        order = torch.randperm(len(candidates), generator=generator)[:length]
    else:
        order = torch.randint(len(candidates), (length,), generator=generator)
    return candidates[order].tolist()


def repeat_to_length(ids: Sequence[int], length: int) -> List[int]:
    """Repeat (and truncate) a token id sequence to exactly ``length`` ids."""
    ids = list(ids)
    if not ids:
        raise ValueError("prompt_init='text' needs a non-empty prompt_init_text (it tokenised to nothing)")
    reps = -(-length // len(ids))
    return (ids * reps)[:length]


def texts_per_prompt(init_text: Union[str, Dict[str, str], None], names: Sequence[str]) -> List[str]:
    """One init text per prompt name: a single string is shared; a dict maps
    names to texts (names missing from the dict use its ``"*"`` entry, if any)."""
    if init_text is None:
        init_text = ""
    if isinstance(init_text, str):
        return [init_text for _ in names]
    texts = []
    for name in names:
        if name in init_text:
            texts.append(init_text[name])
        elif "*" in init_text:
            texts.append(init_text["*"])
        else:
            raise ValueError(f"prompt_init_text has no entry for prompt {name!r} (and no '*' default)")
    return texts
