"""A small residual CNN over a log-mel spectrogram (an `audio` feature), with optional tabular features at the
head. In training it masks random bands and frames of each spectrogram (SpecAugment, Park et al. 2019), which
helps it hear a word the same way in a voice it has not met."""

from __future__ import annotations

import torch
from torch import nn

from lakenet.models.resnet import residual_stages
from lakenet.models.spec import ModelSpec
from lakenet.models.tabular import TabularEncoder

__all__ = ["AudioNet", "spec_augment"]


def spec_augment(x: torch.Tensor, *, bands: int, frames: int, masks: int = 2) -> torch.Tensor:
    """(B, 1, M, T) -> the same with, per row, `masks` runs of up to `bands` mel bands and `masks` runs of up to
    `frames` frames set to 0 (the normalised mean)."""
    b, _, m, t = x.shape
    keep = torch.ones(b, 1, m, t, device=x.device, dtype=x.dtype)
    ar_m = torch.arange(m, device=x.device).view(1, m, 1)
    ar_t = torch.arange(t, device=x.device).view(1, 1, t)
    for _ in range(masks):
        width = torch.randint(0, bands + 1, (b, 1, 1), device=x.device)
        start = (torch.rand(b, 1, 1, device=x.device) * (m - width).clamp(min=1)).long()
        keep = keep * ~((ar_m >= start) & (ar_m < start + width)).unsqueeze(1)
        width = torch.randint(0, frames + 1, (b, 1, 1), device=x.device)
        start = (torch.rand(b, 1, 1, device=x.device) * (t - width).clamp(min=1)).long()
        keep = keep * ~((ar_t >= start) & (ar_t < start + width)).unsqueeze(1)
    return x * keep


class AudioNet(nn.Module):
    """stem (3×3 conv, stride 2, and a 2×2 max-pool) → `depth` residual stages (width × 2^i channels, stride 2
    after the first) → global pool → head, over the (1, n_mels, frames) spectrogram."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        blocks = int(spec.options.get("blocks", 1))
        w = spec.width
        # A quarter of the resolution before the first stage: 64 bands × 101 frames (1 s) become 16 × 25, enough for
        # words, and the stages cost a sixteenth of what they would at full resolution.
        self.stem = nn.Sequential(
            nn.Conv2d(1, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.stages, c = residual_stages(w, spec.depth, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.tabular = TabularEncoder(spec)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(c + self.tabular.out_dim, spec.num_outputs)
        self.audio_input = nn.Identity()  # where attributions are taken (no parameters)
        self.mask_bands = max(1, spec.audio_bins // 8)
        self.mask_frames = max(1, spec.audio_frames // 8)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.audio_input(inputs["audio"])  # (B, 1, M, T)
        if self.training:
            x = spec_augment(x, bands=self.mask_bands, frames=self.mask_frames)
        x = self.pool(self.stages(self.stem(x))).flatten(1)  # (B, C')
        tab = self.tabular(inputs)
        return torch.cat([x, tab], dim=1) if tab is not None else x

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.dropout(self.features(inputs)))  # (B, num_outputs)
