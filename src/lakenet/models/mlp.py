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

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.tabular(inputs)  # (B, F + sum(D))
        assert x is not None, "MLP needs at least one numeric or category feature"
        return self.head(self.dropout(self.body(x)))  # (B, num_outputs)
