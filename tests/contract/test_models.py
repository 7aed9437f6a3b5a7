"""Every registered architecture honours the same contract: builds from a ModelSpec, maps the input dict to
(B, num_outputs), trains (gradients reach every trainable parameter), and survives a bundle round trip exactly.
The cases cover every input kind: numerics, categories, images, audio, vectors, text (bag and pretrained transformer)
and external image backbones (Hugging Face and ONNX Runtime)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from lakenet.data.encoders import (
    CategoryState,
    ImageState,
    LabelState,
    NumericState,
    Preprocessor,
    TextState,
    VectorState,
    text_input_keys,
)
from lakenet.models.bundle import Bundle
from lakenet.models.registry import ARCHITECTURES, build_model
from lakenet.models.spec import BackboneSpec, ModelSpec, RecSpec, TextSpec

TINY_BERT = {
    "model_type": "bert", "vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "max_position_embeddings": 16,
}  # fmt: skip
TINY_VIT = {
    "model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "image_size": 12, "patch_size": 4, "num_channels": 3,
}  # fmt: skip
TAB = {"numeric_dim": 2, "category_sizes": (4,), "category_dims": (3,)}


def _onnx_bytes() -> bytes:
    import warnings

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(2, 3, 12, 12),), buf, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}}, dynamo=False,
        )  # fmt: skip
    return buf.getvalue()


ONNX = _onnx_bytes()

SPECS = {
    "mlp": ModelSpec("mlp", 3, **TAB, width=8, depth=2),
    "mlp-vector-text": ModelSpec(
        "mlp",
        3,
        **TAB,
        width=8,
        depth=1,
        vector_dim=5,
        texts=(
            TextSpec(name="t", kind="bag", buckets=64, dim=4),
            TextSpec(name="u", kind="pretrained", hf_config=TINY_BERT, pooling="mean", normalize=True, dim=16),
        ),
    ),
    "resnet": ModelSpec("resnet", 3, **TAB, image_channels=3, image_size=12, width=4, depth=2),
    "transfer-hf": ModelSpec(
        "transfer",
        3,
        **TAB,
        image_channels=3,
        image_size=12,
        backbone=BackboneSpec(kind="hf", hf_config=TINY_VIT, out_dim=16),
    ),
    "transfer-onnx": ModelSpec(
        "transfer",
        3,
        **TAB,
        image_channels=3,
        image_size=12,
        backbone=BackboneSpec(kind="onnx", nbytes=len(ONNX), input="x", output="y", batch=None, out_dim=4),
    ),
    "twotower": ModelSpec(
        "twotower",
        4,
        numeric_dim=2,
        category_sizes=(6, 4, 3),
        category_dims=(3, 3, 2),
        width=8,
        depth=1,
        recommend=RecSpec(user=0, item=1, item_categories=(2,), item_numeric=(1,), dim=4),
    ),
    "audiocnn": ModelSpec("audiocnn", 3, **TAB, audio_bins=16, audio_frames=21, width=4, depth=2),
    "autoencoder": ModelSpec("autoencoder", 1, **TAB, width=8, depth=2, options={"code_dim": 3, "noise": 0.1}),
    "autoencoder-image-vector-text": ModelSpec(
        "autoencoder",
        1,
        **TAB,
        image_channels=1,
        image_size=12,
        width=8,
        depth=1,
        vector_dim=4,
        texts=(TextSpec(name="t", kind="bag", buckets=64, dim=4),),
        options={"code_dim": 2, "noise": 0.0},
    ),
}


def build(case: str) -> torch.nn.Module:
    model = build_model(SPECS[case])
    if case == "transfer-onnx":  # the graph arrives with the weights, as from a bundle or a checkpoint
        model.load_state_dict({"backbone.onnx": torch.frombuffer(bytearray(ONNX), dtype=torch.uint8)}, strict=False)
    return model


def inputs(spec: ModelSpec, batch: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x: dict[str, torch.Tensor] = {
        "numeric": torch.randn(batch, spec.numeric_dim, generator=g),
        "category": torch.stack([torch.randint(0, n, (batch,), generator=g) for n in spec.category_sizes], dim=1),
    }
    if spec.image_channels:
        x["image"] = torch.randn(batch, spec.image_channels, spec.image_size, spec.image_size, generator=g)
    if spec.audio_bins:
        x["audio"] = torch.randn(batch, 1, spec.audio_bins, spec.audio_frames, generator=g)
    if spec.vector_dim:
        x["vector"] = torch.randn(batch, spec.vector_dim, generator=g)
    for t in spec.texts:
        ids, mask = text_input_keys(t.name)
        x[ids] = torch.randint(1, 40, (batch, 6), generator=g)
        x[mask] = torch.ones(batch, 6, dtype=torch.int64)
        x[mask][:, 4:] = 0
    return x


def test_every_architecture_is_covered() -> None:
    assert {s.architecture for s in SPECS.values()} == set(ARCHITECTURES)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_forward_shape_and_gradients(case: str) -> None:
    spec = SPECS[case]
    model = build(case)
    out = model(inputs(spec))
    assert out.shape == (5, spec.num_outputs)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    # BERT's pooler and ViT's unused pooled token paths aside, every parameter learns
    assert all("pooler" in n for n in missing), missing


@pytest.mark.parametrize("case", sorted(SPECS))
def test_bundle_round_trip(case: str, tmp_path: Path) -> None:
    spec = SPECS[case]
    torch.manual_seed(1)
    model = build(case).eval()
    extra: dict[str, Any] = {}
    if spec.vector_dim:
        extra["vectors"] = [VectorState("v", "v", spec.vector_dim)]
    if spec.texts:
        extra["texts"] = [TextState("t", "t", "bag", 6, buckets=64), TextState("u", "u", "bag", 6, buckets=40)]
    pre = Preprocessor(
        key="key",
        numeric=[NumericState("a", "a", 0, 1), NumericState("b", "b", 0, 1)],
        categories=[CategoryState("c", "c", ["x", "y", "z"], 3)],
        image=ImageState("i", "i", spec.image_size, spec.image_channels, [0.0] * 3, [1.0] * 3)
        if spec.image_channels
        else None,
        label=LabelState("label", "classification", classes=["p", "q", "r"]),
        **extra,
    )
    loaded = Bundle.load(Bundle(spec, pre, model.state_dict()).save(tmp_path / case))
    assert loaded.spec == spec
    assert loaded.preprocessor.to_dict() == pre.to_dict()
    again = loaded.build()
    x = inputs(spec)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
