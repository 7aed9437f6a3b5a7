"""Text encoders: a small trainable bag of hashed words and bigrams, or a pretrained transformer (a sentence
encoder such as all-MiniLM-L6-v2) with its own pooling. Both map token ids (B, L) to one vector per row."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lakenet.models.spec import TextSpec

__all__ = ["BagEncoder", "PretrainedTextEncoder", "build_text_encoder", "full_length"]


_FULL_LENGTH = threading.local()


@contextlib.contextmanager
def full_length() -> Iterator[None]:
    """Keep every padded position (no trimming) inside the block: attributions interpolate the token embeddings
    of the input and of an all-padding baseline, which must have the same shape."""
    _FULL_LENGTH.on = True
    try:
        yield
    finally:
        _FULL_LENGTH.on = False


def _exporting() -> bool:
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or getattr(_FULL_LENGTH, "on", False))


def _trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns every row of the batch has: rows are padded to max_length, but short texts
    should not pay for attention over 128 pad tokens. Skipped while exporting (the length is data-dependent)."""
    if _exporting() or ids.shape[1] == 0:
        return ids, mask
    longest = max(int(mask.sum(1).max()), 1)
    return ids[:, :longest], mask[:, :longest]


class BagEncoder(nn.Module):
    """Mean of learned embeddings of hashed word and bigram ids (0 = padding): fast, trainable from scratch."""

    def __init__(self, buckets: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(buckets + 1, dim, padding_idx=0)
        self.out_dim = dim

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        m = (ids != 0).to(torch.float32) if mask is None else mask.to(torch.float32)  # (B, L)
        ids, m = _trim(ids, m)
        summed = (self.embedding(ids) * m.unsqueeze(-1)).sum(1)  # (B, L, D) -> (B, D)
        return summed / m.sum(1, keepdim=True).clamp(min=1.0)


class PretrainedTextEncoder(nn.Module):
    """A Hugging Face transformer built from its config (weights come from the bundle or the pretrained
    checkpoint), pooled like the sentence encoder it came from (mean or CLS), optionally L2-normalised."""

    def __init__(self, hf_config: dict[str, Any], pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__()
        from lakenet.models.pretrained import build_hf_model

        self.model = build_hf_model(hf_config)
        self.pooling, self.normalize = pooling, normalize
        self.out_dim = int(hf_config["hidden_size"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, mask = _trim(ids, mask)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            x = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            x = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)
        return F.normalize(x, p=2.0, dim=1) if self.normalize else x


def build_text_encoder(t: TextSpec) -> nn.Module:
    """The encoder for one text feature of a ModelSpec."""
    if t.kind == "bag":
        return BagEncoder(t.buckets, t.dim)
    assert t.hf_config is not None
    return PretrainedTextEncoder(t.hf_config, t.pooling, t.normalize)
