"""Shared tabular trunk: standardised numerics + category embeddings → one feature vector."""

from __future__ import annotations

import torch
from torch import nn

from lakenet.models.spec import ModelSpec

__all__ = ["TabularEncoder"]


class TabularEncoder(nn.Module):
    """Concatenates numeric features and category embeddings; `out_dim` is 0 when there are none."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, dim) for size, dim in zip(spec.category_sizes, spec.category_dims, strict=True)
        )
        self.out_dim = spec.numeric_dim + sum(spec.category_dims)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        parts = []
        if "numeric" in inputs:
            parts.append(inputs["numeric"])  # (B, F)
        if len(self.embeddings):
            cats = inputs["category"]  # (B, K) int64
            parts.extend(emb(cats[:, j]) for j, emb in enumerate(self.embeddings))  # K x (B, D_j)
        return torch.cat(parts, dim=1) if parts else None
