"""Shared non-image trunk: standardised numerics, category embeddings, vector features and encoded text →
one feature vector."""

from __future__ import annotations

import torch
from torch import nn

from lakenet.data.encoders import text_input_keys
from lakenet.models.spec import ModelSpec
from lakenet.models.text import build_text_encoder

__all__ = ["TabularEncoder"]


class TabularEncoder(nn.Module):
    """Concatenates numeric features, category embeddings, vectors and text encodings; `out_dim` is 0 when
    there are none."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, dim) for size, dim in zip(spec.category_sizes, spec.category_dims, strict=True)
        )
        self.texts = nn.ModuleList(build_text_encoder(t) for t in spec.texts)
        self._text_keys = [text_input_keys(t.name) for t in spec.texts]
        self.out_dim = spec.numeric_dim + sum(spec.category_dims) + spec.vector_dim + sum(t.dim for t in spec.texts)
        # Where attributions are taken for the continuous blocks (no parameters: the weights are unchanged)
        self.numeric_input, self.vector_input = nn.Identity(), nn.Identity()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        parts = []
        if "numeric" in inputs:
            parts.append(self.numeric_input(inputs["numeric"]))  # (B, F)
        if len(self.embeddings):
            cats = inputs["category"]  # (B, K) int64
            parts.extend(emb(cats[:, j]) for j, emb in enumerate(self.embeddings))  # K x (B, D_j)
        if "vector" in inputs:
            parts.append(self.vector_input(inputs["vector"]))  # (B, V)
        for (ids, mask), enc in zip(self._text_keys, self.texts, strict=True):
            parts.append(enc(inputs[ids], inputs.get(mask)))  # (B, L) -> (B, D_t)
        return torch.cat(parts, dim=1) if parts else None
