"""A model of normal rows for `task: anomaly`: an autoencoder over the encoded features (numbers, categories,
vectors, an image; text is read but not reconstructed). A row's raw anomaly score is how badly the code it is
squeezed into reconstructs it, each part's error divided by that part's typical error on validation rows (the
`scale` buffer, set when the model is calibrated after training)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lakenet.models.resnet import residual_stages
from lakenet.models.spec import ModelSpec
from lakenet.models.tabular import TabularEncoder

__all__ = ["AutoEncoder", "reconstructed_parts"]

_IMAGE_TARGET = 16  # images are reconstructed at most this many pixels a side (average-pooled)


def reconstructed_parts(spec: ModelSpec) -> list[str]:
    """The names of the parts whose reconstruction error makes up the score, in the order of `errors()`'s
    columns: numeric, category.<j>, vector, image."""
    parts = ["numeric"] if spec.numeric_dim else []
    parts += [f"category.{j}" for j in range(len(spec.category_sizes))]
    if spec.vector_dim:
        parts.append("vector")
    if spec.image_channels:
        parts.append("image")
    return parts


class _ImageEncoder(nn.Module):
    """stem → `depth` residual stages (stride 2 after the first) → global average pool: (B, C, S, S) -> (B, C')."""

    def __init__(self, channels: int, width: int, depth: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stages, self.out_dim = residual_stages(width, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))  # (B, C, H, W) -> (B, C')


class AutoEncoder(nn.Module):
    """encoder: the tabular trunk (+ a small CNN for the image) → MLP → code (B, code_dim); decoder: code → MLP →
    one head per reconstructed part. `forward` returns the raw anomaly score (B, 1)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.code_dim = int(spec.options.get("code_dim", 8))
        self.noise = float(spec.options.get("noise", 0.1))
        self.tabular = TabularEncoder(spec)
        self.image: _ImageEncoder | None = None
        in_dim = self.tabular.out_dim
        if spec.image_channels:
            self.image = _ImageEncoder(spec.image_channels, max(8, spec.width // 4), max(1, min(spec.depth, 3)))
            in_dim += self.image.out_dim
            self.image_side = min(_IMAGE_TARGET, spec.image_size)
        w = spec.width
        enc: list[nn.Module] = []
        dim = in_dim
        for _ in range(spec.depth):
            enc += [nn.Linear(dim, w), nn.LayerNorm(w), nn.GELU()]
            dim = w
        self.encoder = nn.Sequential(*enc, nn.Linear(dim, self.code_dim))
        dec: list[nn.Module] = []
        dim = self.code_dim
        for _ in range(spec.depth):
            dec += [nn.Linear(dim, w), nn.GELU()]
            dim = w
        self.decoder = nn.Sequential(*dec)
        self.numeric_head = nn.Linear(w, spec.numeric_dim) if spec.numeric_dim else None
        self.category_heads = nn.ModuleList(nn.Linear(w, size) for size in spec.category_sizes)
        # Cross-entropy over a vocabulary of n values starts near log(n): divided by it, each category weighs
        # about as much as a standardised number at the start of training.
        self.register_buffer(
            "category_norm", torch.tensor([1.0 / math.log(max(n, 2)) for n in spec.category_sizes]), persistent=False
        )
        self.vector_head = nn.Linear(w, spec.vector_dim) if spec.vector_dim else None
        self.image_head = nn.Linear(w, spec.image_channels * self.image_side**2) if spec.image_channels else None
        self.parts = reconstructed_parts(spec)
        if not self.parts:
            raise ValueError("an anomaly model needs a number, category, vector or image feature to reconstruct")
        # Each part's typical error on validation rows (1 until the model is calibrated after training).
        self.register_buffer("scale", torch.ones(len(self.parts)))

    def _corrupt(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training only: noise on the continuous inputs (a denoising autoencoder learns the data's structure
        rather than the identity)."""
        if not self.training or self.noise == 0:
            return inputs
        out = dict(inputs)
        for k in ("numeric", "vector"):
            if k in out:
                out[k] = out[k] + self.noise * torch.randn_like(out[k])
        return out

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The row's code (B, code_dim): what `lakenet featurize` writes."""
        parts = []
        tab = self.tabular(inputs)
        if tab is not None:
            parts.append(tab)
        if self.image is not None:
            parts.append(self.image(inputs["image"]))
        return self.encoder(torch.cat(parts, dim=1))

    def errors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reconstruction error per row and part (B, P), each part's error a mean over its values."""
        h = self.decoder(self.features(self._corrupt(inputs)))  # (B, width)
        errs = []
        if self.numeric_head is not None:
            errs.append(F.mse_loss(self.numeric_head(h), inputs["numeric"], reduction="none").mean(1))
        if len(self.category_heads):
            cats = inputs["category"]  # (B, K)
            for j, head in enumerate(self.category_heads):
                ce = F.cross_entropy(head(h), cats[:, j], reduction="none")
                errs.append(ce * self.category_norm[j])  # type: ignore[index]
        if self.vector_head is not None:
            errs.append(F.mse_loss(self.vector_head(h), inputs["vector"], reduction="none").mean(1))
        if self.image_head is not None:
            target = F.adaptive_avg_pool2d(inputs["image"], self.image_side).flatten(1)  # (B, C*s*s)
            errs.append(F.mse_loss(self.image_head(h), target, reduction="none").mean(1))
        return torch.stack(errs, dim=1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        scale: torch.Tensor = self.scale  # type: ignore[assignment]
        return (self.errors(inputs) / scale).mean(dim=1, keepdim=True)  # (B, 1) raw anomaly score
