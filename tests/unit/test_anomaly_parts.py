"""The anomaly model's parts without a table: the calibration map, the semi-supervised loss and the autoencoder's
per-part errors."""

from __future__ import annotations

import numpy as np
import torch

from lakenet.inference.calibration import Calibration
from lakenet.models.autoencoder import AutoEncoder, reconstructed_parts
from lakenet.models.spec import ModelSpec
from lakenet.training.loop import AnomalyLoss


def test_calibration_is_the_validation_share_below_and_strictly_increasing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    val = rng.lognormal(0.0, 0.5, 5000)
    cal = Calibration.fit(val)
    # about the share of validation rows that score lower
    for q in (0.1, 0.5, 0.9, 0.99):
        assert abs(cal(np.array([np.quantile(val, q)]))[0] - q) < 0.01
    grid = np.geomspace(1e-6, 1e6, 20_000)  # far beyond both ends: still in (0, 1), still ordered
    out = cal(grid)
    assert ((out > 0) & (out < 1)).all() and (np.diff(out) > 0).all()
    assert Calibration.from_list(cal.to_list())(grid).tolist() == out.tolist()  # JSON round trip


def test_calibration_of_tied_scores_stays_increasing() -> None:
    cal = Calibration.fit(np.r_[np.full(900, 0.5), np.linspace(0.6, 2.0, 100)])
    assert (np.diff(cal.knots) > 0).all()
    assert (np.diff(cal(np.linspace(0.1, 3.0, 500))) > 0).all()


def test_anomaly_loss_pushes_known_anomalies_or_ignores_them() -> None:
    score = torch.tensor([[0.2], [0.4], [5.0]], requires_grad=True)
    target = torch.tensor([-1, 0, 1])
    push = AnomalyLoss("push")(score, target)
    assert torch.isclose(push, torch.tensor((0.2 + 0.4 + 1 / 5.01) / 3))
    push.backward()
    assert score.grad is not None and score.grad[2, 0] < 0 < score.grad[0, 0]  # a known anomaly's error goes up
    ignore = AnomalyLoss("ignore")(score.detach(), target)
    assert torch.isclose(ignore, torch.tensor(0.3))


def test_autoencoder_errors_per_part_and_the_scaled_score() -> None:
    spec = ModelSpec(architecture="autoencoder", num_outputs=1, numeric_dim=3, category_sizes=(5, 9),
                     category_dims=(3, 4), image_channels=1, image_size=8, width=16, depth=1,
                     options={"code_dim": 4, "noise": 0.1})  # fmt: skip
    assert reconstructed_parts(spec) == ["numeric", "category.0", "category.1", "image"]
    torch.manual_seed(0)
    model = AutoEncoder(spec).eval()
    inputs = {"numeric": torch.randn(6, 3), "category": torch.randint(0, 5, (6, 2)), "image": torch.randn(6, 1, 8, 8)}
    errors = model.errors(inputs)
    assert errors.shape == (6, 4) and (errors >= 0).all()
    model.scale.copy_(torch.tensor([2.0, 1.0, 1.0, 4.0]))
    expected = (errors / torch.tensor([2.0, 1.0, 1.0, 4.0])).mean(1, keepdim=True)
    assert torch.allclose(model(inputs), expected)
    assert model.features(inputs).shape == (6, 4)
