"""A small residual CNN (ResNet-style basic blocks) for images, with optional tabular features at the head."""

from __future__ import annotations

import torch
from torch import nn

from lakenet.models.spec import ModelSpec
from lakenet.models.tabular import TabularEncoder

__all__ = ["BasicBlock", "ResNet", "residual_stages"]


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def residual_stages(width: int, depth: int, blocks: int = 1) -> tuple[nn.Sequential, int]:
    """`depth` stages of `blocks` basic blocks, width × 2^i channels, stride 2 at the start of every stage but the
    first: the stages and their output channels."""
    stages: list[nn.Module] = []
    c = width
    for i in range(depth):
        c_out = width * 2**i
        for b in range(blocks):
            stages.append(BasicBlock(c, c_out, stride=2 if (i > 0 and b == 0) else 1))
            c = c_out
    return nn.Sequential(*stages), c


class ResNet(nn.Module):
    """stem → `depth` stages (width × 2^i channels, stride 2 after the first) → global pool → head.

    depth=4, width=64 with `options.blocks=2` and 224² inputs is ResNet-18-sized.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        blocks = int(spec.options.get("blocks", 1))
        w = spec.width
        self.stem = nn.Sequential(
            nn.Conv2d(spec.image_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)
        )
        if spec.image_size >= 96:  # large inputs: downsample early like ResNet's 7×7/2 + max-pool stem
            self.stem = nn.Sequential(
                nn.Conv2d(spec.image_channels, w, 7, 2, 3, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        self.stages, c = residual_stages(w, spec.depth, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.tabular = TabularEncoder(spec)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(c + self.tabular.out_dim, spec.num_outputs)
        self.image_input = nn.Identity()  # where image attributions are taken (no parameters)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.stages(self.stem(self.image_input(inputs["image"])))  # (B, C, H, W) -> (B, C', H', W')
        x = self.pool(x).flatten(1)  # (B, C')
        tab = self.tabular(inputs)
        return torch.cat([x, tab], dim=1) if tab is not None else x

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.dropout(self.features(inputs)))  # (B, num_outputs)
