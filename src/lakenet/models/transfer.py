"""A pretrained image feature extractor from outside lakenet (ONNX Runtime or Hugging Face) with a new head,
plus any tabular, vector or text features of the row."""

from __future__ import annotations

import torch
from torch import nn

from lakenet.models.pretrained import HFVisionBackbone, OnnxBackbone
from lakenet.models.spec import ModelSpec
from lakenet.models.tabular import TabularEncoder

__all__ = ["TransferNet"]


class TransferNet(nn.Module):
    """backbone(image) ‖ tabular(row) → dropout → linear head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        b = spec.backbone
        assert b is not None, "architecture 'transfer' needs spec.backbone"
        self.backbone: nn.Module
        if b.kind == "onnx":
            self.backbone = OnnxBackbone(b.nbytes, b.input, b.output, b.batch)
        else:
            assert b.hf_config is not None
            self.backbone = HFVisionBackbone(b.hf_config)
        self.tabular = TabularEncoder(spec)
        self.image_input = nn.Identity()  # where image attributions are taken (no parameters)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(b.out_dim + self.tabular.out_dim, spec.num_outputs)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.backbone(self.image_input(inputs["image"]))  # (B, C, H, W) -> (B, D)
        tab = self.tabular(inputs)
        return torch.cat([x, tab], dim=1) if tab is not None else x

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.dropout(self.features(inputs)))  # (B, num_outputs)
