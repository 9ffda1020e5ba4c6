"""The transformer's batch output, split per Doc without a dict of every token.

``FullTransformerBatch.split_by_doc`` (spacy-transformers) numbers every token
of the batch in a dict keyed by ``Token`` objects (``get_token_positions``)
only to read each Doc's first and last token position.  Tokens are numbered
Doc by Doc in order of first appearance, so those positions are the Doc's
offset plus the token index: :class:`SoftPromptTransformerBatch` computes
them from one offset per Doc and otherwise splits exactly as the original
(same per-Doc wordpieces, alignment and output slices).
"""
from typing import Dict, List, cast

import torch
from spacy_transformers.data_classes import FullTransformerBatch, TransformerData
from thinc.api import torch2xp
from transformers.file_utils import ModelOutput
from transformers.modeling_outputs import BaseModelOutput


class SoftPromptTransformerBatch(FullTransformerBatch):
    """``FullTransformerBatch`` with a per-Doc split that costs one step per Doc, not per token."""

    def split_by_doc(self) -> List[TransformerData]:
        if any(len(span) == 0 for doc_spans in self.spans for span in doc_spans):
            return super().split_by_doc()  # the original's rules for empty windows
        doc_offsets: Dict[int, int] = {}  # id(doc) -> position of its first token in the batch
        n_tokens = 0
        for doc_spans in self.spans:
            for span in doc_spans:
                if id(span.doc) not in doc_offsets:
                    doc_offsets[id(span.doc)] = n_tokens
                    n_tokens += len(span.doc)
        last_hidden_state = cast(BaseModelOutput, self.model_output).last_hidden_state
        xp_model_output = ModelOutput()
        for key, output in self.model_output.items():
            if isinstance(output, torch.Tensor):
                xp_model_output[key] = torch2xp(output)
            elif (
                isinstance(output, tuple)
                and all(isinstance(t, torch.Tensor) for t in output)
                and all(t.shape[0] == last_hidden_state.shape[0] for t in output)
            ):
                xp_model_output[key] = [torch2xp(t) for t in output]
        outputs: List[TransformerData] = []
        start = prev_tokens = 0
        for doc_spans in self.spans:
            if len(doc_spans) == 0:
                outputs.append(TransformerData.empty())
                continue
            first, last = doc_spans[0], doc_spans[-1]
            start_i = doc_offsets[id(first.doc)] + first.start
            end_i = doc_offsets[id(last.doc)] + last.end
            end = start + len(doc_spans)
            doc_tokens = self.wordpieces[start:end]
            doc_align = self.align[start_i:end_i]
            doc_align.data = doc_align.data - prev_tokens
            model_output = ModelOutput()
            for key, output in xp_model_output.items():
                model_output[key] = output[start:end] if not isinstance(output, list) else [t[start:end] for t in output]
            outputs.append(TransformerData(wordpieces=doc_tokens, model_output=model_output, align=doc_align))
            prev_tokens += doc_tokens.input_ids.size
            start += len(doc_spans)
        return outputs
