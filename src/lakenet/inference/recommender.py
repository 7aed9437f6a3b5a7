"""A recommendation model at work: for rows that name a user (and the user-side features), the top-k catalogue
items by the two-tower score; a user the model never learned (cold start) gets the popularity ranking, and says
so. The item tower runs once per loaded model: a request costs one user-tower pass and a (users × items) product."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lakenet.data.codecs import CategoryCodec, strings
from lakenet.errors import DataError

if TYPE_CHECKING:
    from lakenet.inference.predictor import Predictor

__all__ = ["RECOMMEND_FIELDS", "Recommender"]

# The columns of a recommendation, per scored row.
RECOMMEND_FIELDS = [
    pa.field("user", pa.string()),
    pa.field("items", pa.list_(pa.string())),
    pa.field("scores", pa.list_(pa.float32())),
    pa.field("source", pa.string()),  # model, or popularity (a user the model never learned)
]


class Recommender:
    """Top-k items per row, from a Predictor of a recommendation model (torch runtime)."""

    def __init__(self, predictor: Predictor, k: int = 10) -> None:
        import torch

        self.predictor, self.pre, self.k = predictor, predictor.pre, k
        model: Any = predictor.model
        if model is None or not hasattr(model, "item_vectors"):
            raise DataError("Recommendations need the model's torch weights (a two-tower bundle), not an ONNX file")
        self.model = model
        spec = predictor.bundle.spec.recommend
        assert spec is not None
        cats = [c for c in self.pre.features if isinstance(c, CategoryCodec)]
        self.user_codec, self.item_codec = cats[spec.user], cats[spec.item]
        item_side = {spec.item, *spec.item_categories}
        self.item_columns = {cats[j].column for j in item_side}
        numeric_at = 0
        for c in self.pre.features:
            w = c.numeric_width()
            if w and set(range(numeric_at, numeric_at + w)) <= set(spec.item_numeric):
                self.item_columns.add(c.column)
            numeric_at += w
        self.user_columns = [c for c in self.pre.input_columns() if c not in self.item_columns]
        names = ["", *self.item_codec.state.vocab]  # index 0: unknown
        self.items = np.asarray(names + [""] * (self.n_items - len(names)), dtype=object)  # + the missing bucket
        with torch.inference_mode():
            self.item_matrix = model.item_vectors().float().cpu().numpy()  # (n_items, dim)
        self.popularity = model.popularity.float().cpu().numpy().astype(np.float64)  # (n_items,)
        self.never = np.zeros(self.n_items, dtype=bool)
        self.never[0] = True  # the unknown bucket is no item
        self.never[len(self.item_codec.state.vocab) + 1 :] = True  # nor is the missing-value bucket

    @property
    def n_items(self) -> int:
        return int(self.item_codec.state.size)

    def item_index(self, values: Sequence[str | None]) -> np.ndarray:
        return self.item_codec.index_of(list(values))

    def _user_rows(self, batch: pa.Table) -> pa.Table:
        """The batch with the item-side columns the model reads from its catalogue instead: placeholders that
        encode without an error (the first item, missing features); user features it lacks are missing values."""
        n = batch.num_rows
        for col in self.user_columns:
            if col not in batch.column_names:
                batch = batch.append_column(col, pa.nulls(n))
        first = self.item_codec.state.vocab[0] if self.item_codec.state.vocab else None
        for col in self.item_columns:
            value = first if col == self.item_codec.column else None
            arr = pa.array([value] * n, pa.string() if value is not None else pa.null())
            if col in batch.column_names:
                batch = batch.set_column(batch.column_names.index(col), col, arr)
            else:
                batch = batch.append_column(col, arr)
        return batch

    def scores(self, batch: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        """(scores (N, n_items) over the valid rows, valid (N,), cold (valid rows,) , errors (N,)): the model's
        scores, a cold-start user's row replaced by the popularity ranking."""
        if self.user_codec.column not in batch.column_names:
            raise DataError(f"The rows have no user column {self.user_codec.column!r}; it names whom to recommend to.")
        table = self._user_rows(batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch]))
        enc = self.pre.encode(table, with_label=False)
        users = self.user_codec.index_of(strings(table.column(self.user_codec.column)))[enc.valid]
        out = self._user_matrix(enc.inputs) @ self.item_matrix.T  # (users, dim) × (dim, n_items): float32
        cold = users == 0
        if cold.any():
            out[cold] = self.popularity
        return out, enc.valid, cold, enc.reasons()

    def _user_matrix(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, dim) user vectors: the user tower only. The model's own forward would run the item tower over the
        whole catalogue again for every request; its output is cached as `item_matrix`."""
        import torch

        n = len(next(iter(inputs.values()))) if inputs else 0
        if not n:
            return np.zeros((0, self.item_matrix.shape[1]), np.float32)
        device = self.predictor.device
        with torch.inference_mode():
            batch = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
            return self.model.user_vectors(batch).float().cpu().numpy()

    def top(
        self, scores: np.ndarray, exclude: Sequence[set[int] | None] | None = None, k: int | None = None
    ) -> np.ndarray:
        """(N, k) catalogue indices, best first; never the unknown or missing bucket, nor a row's `exclude`."""
        k = min(k or self.k, int((~self.never).sum()))
        s = np.array(scores, dtype=np.float32, copy=True)
        s[:, self.never] = -np.inf
        for i, seen in enumerate(exclude or []):
            if seen:
                s[i, list(seen)] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]  # the k best, unordered
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
        return np.take_along_axis(part, order, 1)

    def __call__(
        self, batch: pa.Table, *, exclude: Sequence[set[int] | None] | None = None, k: int | None = None
    ) -> pa.Table:
        """One row per input row: the user, its top-k items and their scores, the source, and the error."""
        scores, valid, cold, errors = self.scores(batch)
        rows = np.flatnonzero(valid)
        picked = self.top(scores, [exclude[int(i)] for i in rows] if exclude else None, k)
        n = batch.num_rows
        items: list[list[str] | None] = [None] * n
        values: list[list[float] | None] = [None] * n
        source: list[str | None] = [None] * n
        for j, i in enumerate(rows):
            items[i] = [str(v) for v in self.items[picked[j]]]
            values[i] = [float(v) for v in scores[j, picked[j]]]
            source[i] = "popularity" if cold[j] else "model"
        users = strings(batch.column(self.user_codec.column))
        cols = [pa.array(users, pa.string()), pa.array(items, pa.list_(pa.string())),
                pa.array(values, pa.list_(pa.float32())), pa.array(source, pa.string())]  # fmt: skip
        schema = pa.schema([*RECOMMEND_FIELDS, pa.field("error", pa.string())])
        return pa.table([*cols, pa.array(errors, pa.string())], schema=schema)
