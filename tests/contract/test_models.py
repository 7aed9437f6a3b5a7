"""Every registered architecture honours the same contract: builds from a ModelSpec, maps the input dict to
(B, num_outputs), trains (gradients reach every parameter), and survives a bundle round trip exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lakenet.data.encoders import CategoryState, ImageState, LabelState, NumericState, Preprocessor
from lakenet.models.bundle import Bundle
from lakenet.models.registry import ARCHITECTURES, build_model
from lakenet.models.spec import ModelSpec

SPECS = {
    "mlp": ModelSpec("mlp", 3, numeric_dim=2, category_sizes=(4,), category_dims=(3,), width=8, depth=2),
    "resnet": ModelSpec(
        "resnet",
        3,
        numeric_dim=2,
        category_sizes=(4,),
        category_dims=(3,),
        image_channels=3,
        image_size=12,
        width=4,
        depth=2,
    ),
}


def inputs(spec: ModelSpec, batch: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x: dict[str, torch.Tensor] = {
        "numeric": torch.randn(batch, spec.numeric_dim, generator=g),
        "category": torch.randint(0, spec.category_sizes[0], (batch, 1), generator=g),
    }
    if spec.image_channels:
        x["image"] = torch.randn(batch, spec.image_channels, spec.image_size, spec.image_size, generator=g)
    return x


def test_every_architecture_is_covered() -> None:
    assert set(SPECS) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_forward_shape_and_gradients(name: str) -> None:
    spec = SPECS[name]
    model = build_model(spec)
    out = model(inputs(spec))
    assert out.shape == (5, spec.num_outputs)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_bundle_round_trip(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    torch.manual_seed(1)
    model = build_model(spec).eval()
    pre = Preprocessor(
        key="key",
        numeric=[NumericState("a", "a", 0, 1), NumericState("b", "b", 0, 1)],
        categories=[CategoryState("c", "c", ["x", "y", "z"], 3)],
        image=ImageState("i", "i", spec.image_size, spec.image_channels, [0.0] * 3, [1.0] * 3)
        if spec.image_channels
        else None,
        label=LabelState("label", "classification", classes=["p", "q", "r"]),
    )
    loaded = Bundle.load(Bundle(spec, pre, model.state_dict()).save(tmp_path / name))
    assert loaded.spec == spec
    again = loaded.build()
    x = inputs(spec)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
