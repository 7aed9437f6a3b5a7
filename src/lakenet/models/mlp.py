"""MLP for tabular rows: embeddings + numerics → [Linear, LayerNorm, GELU] × depth → head."""

from __future__ import annotations

import torch
from torch import nn

from lakenet.models.spec import ModelSpec
from lakenet.models.tabular import TabularEncoder

__all__ = ["MLP"]


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.tabular = TabularEncoder(spec)
        layers: list[nn.Module] = []
        dim = self.tabular.out_dim
        for _ in range(spec.depth):
            layers += [nn.Linear(dim, spec.width), nn.LayerNorm(spec.width), nn.GELU()]
            dim = spec.width
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(dim, spec.num_outputs)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last hidden layer: what the head sees (an embedding of the row)."""
        x = self.tabular(inputs)  # (B, F + sum(D))
        assert x is not None, "MLP needs at least one non-image feature"
        return self.body(x)  # (B, width)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.dropout(self.features(inputs)))  # (B, num_outputs)
