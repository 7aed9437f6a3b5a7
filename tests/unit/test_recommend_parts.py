"""The recommendation parts without a model: the per-user holdout (and that it merges like one pass), the ranking
metrics, and the top-k with items left out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from lakenet.data.holdout import HoldoutPartial, UserHoldout, learn_holdout
from lakenet.data.split import TEST, TRAIN, VAL
from lakenet.evaluation.recommend import ranking_metrics


def log_table() -> pa.Table:
    # u1: 5 interactions, u2: 2 (too few for validation), u3: 1 (nothing to hold out); times as ISO strings
    rows = [("u1", f"2026-01-0{d}T10:00:00Z") for d in range(1, 6)] + [("u2", "2026-02-01"), ("u2", "2026-02-02")]
    rows.append(("u3", "2026-03-01"))
    return pa.table({"key": [f"k{i}" for i in range(len(rows))], "user": [u for u, _ in rows],
                     "ts": [t for _, t in rows]})  # fmt: skip


def test_each_users_last_interactions_are_held_out() -> None:
    table = log_table()
    holdout = UserHoldout.from_partial(_partial(table, holdout=1), user="user", time="ts", key="key")
    codes = holdout.codes(table).tolist()
    assert codes == [TRAIN, TRAIN, TRAIN, VAL, TEST, TRAIN, TEST, TRAIN]
    two = UserHoldout.from_partial(_partial(table, holdout=2), user="user", time="ts", key="key")
    assert two.codes(table).tolist() == [
        TRAIN,
        VAL,
        VAL,
        TEST,
        TEST,
        TRAIN,
        TRAIN,
        TRAIN,
    ]  # u2 keeps both: none would be left


def test_the_holdout_merges_like_one_pass_whatever_the_pieces() -> None:
    table = log_table().take(pa.array([7, 3, 0, 5, 1, 6, 4, 2]))  # shuffled
    whole = _partial(table, holdout=1)
    merged = HoldoutPartial(1)
    for start in range(0, 8, 3):
        merged = merged.merge(_partial(table.slice(start, 3), holdout=1))
    assert merged.counts == whole.counts and {u: sorted(h) for u, h in merged.users.items()} == {
        u: sorted(h) for u, h in whole.users.items()
    }

    class Snap:
        def iter_pieces(self, columns: list[str]):  # type: ignore[no-untyped-def]
            for start in range(0, 8, 3):
                yield 0, None, table.slice(start, 3).select(columns)

    learned = learn_holdout(Snap(), user="user", time="ts", key="key", holdout=1)
    assert learned.codes(log_table()).tolist() == [TRAIN, TRAIN, TRAIN, VAL, TEST, TRAIN, TEST, TRAIN]


def _partial(table: pa.Table, *, holdout: int) -> HoldoutPartial:
    from lakenet.data.holdout import _HoldoutTask

    return _HoldoutTask("user", "ts", "key", holdout)(0, None, table)


def test_ranking_metrics() -> None:
    top = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 6]])
    recall, ndcg = ranking_metrics(top, [{3}, {4, 2}, set()], k=3)  # the empty user is skipped
    assert recall == pytest.approx((1.0 + 1.0) / 2)
    d = 1 / np.log2(np.arange(2, 5))
    assert ndcg == pytest.approx((d[1] / d[0] + (d[1] + d[2]) / (d[0] + d[1])) / 2)
    recall1, _ = ranking_metrics(top, [{3, 1, 0, 11}, {8}, {6}], k=1)
    assert recall1 == pytest.approx(0.0)  # nothing in anyone's top 1


def test_sampled_negatives_score_the_batch_and_uniform_items_with_the_logq_correction() -> None:
    import torch

    from lakenet.models.spec import ModelSpec, RecSpec
    from lakenet.models.twotower import TwoTower
    from lakenet.training.loop import RecommendLoss

    layout = RecSpec(user=0, item=1, dim=4, negatives=6)
    spec = ModelSpec("twotower", 50, numeric_dim=1, category_sizes=(9, 50), category_dims=(4, 4), width=8, depth=1,
                     dropout=0.0, recommend=layout)  # fmt: skip
    torch.manual_seed(0)
    model = TwoTower(spec)
    model.popularity.copy_(torch.arange(50, dtype=torch.float32))
    items = torch.tensor([3, 7, 3, 20])  # rows 0 and 2 bought the same item
    inputs = {"category": torch.stack([torch.tensor([1, 2, 3, 4]), items], dim=1), "numeric": torch.randn(4, 1)}
    scores = model.train()(inputs)
    assert scores.shape == (4, 4 + 6)
    assert torch.isinf(scores[0, 2]) and torch.isinf(scores[2, 0])  # the other copy of one's own item is masked
    assert torch.isfinite(scores.diagonal()).all()
    raw = model.user_vectors(inputs) @ model.item_vectors(items).T
    q = (4 * model.popularity[items] / model.popularity.sum()).clamp(max=1.0)
    assert torch.allclose(scores[1, :4][[0, 1, 3]], (raw[1] - torch.log(q))[[0, 1, 3]], atol=1e-5)
    loss = RecommendLoss(50)(scores, torch.tensor([3, 7, -100, 20]))
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(scores[[0, 1, 3]], torch.tensor([0, 1, 3])))
    assert model.eval()(inputs).shape == (4, 50)  # evaluation and scoring: every catalogue item
