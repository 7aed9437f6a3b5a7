"""A two-tower recommender (task recommendation): a user tower over the user-side inputs (the user's own
embedding, user and context features) and an item tower over each catalogue item (its embedding and the item
features of its latest training interaction, kept as buffers); a pair's score is the dot product of their vectors.
`forward` scores every catalogue item for each row: (B, n_items), trained with a softmax over the catalogue, or
over the batch's items and sampled ones for a big catalogue (`sampled_scores`: (B, B + S))."""

from __future__ import annotations

import torch
from torch import nn

from lakenet.models.spec import ModelSpec, RecSpec

__all__ = ["TwoTower"]


def _mlp(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(d_in, width), nn.LayerNorm(width), nn.GELU()]
        d_in = width
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class TwoTower(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        assert spec.recommend is not None, "a two-tower model needs the spec's recommend layout"
        r: RecSpec = spec.recommend
        self.rec = r
        sizes, dims = spec.category_sizes, spec.category_dims
        n_items = sizes[r.item]
        item_side = {r.item, *r.item_categories}
        self.user_cats = [j for j in range(len(sizes)) if j not in item_side]
        self.user_numeric = [c for c in range(spec.numeric_dim) if c not in set(r.item_numeric)]
        # user tower
        self.user_embeddings = nn.ModuleList(nn.Embedding(sizes[j], max(dims[j], 8)) for j in self.user_cats)
        d_user = sum(max(dims[j], 8) for j in self.user_cats) + len(self.user_numeric) + spec.vector_dim
        self.user_tower = _mlp(d_user, spec.width, spec.depth, r.dim)
        # item tower
        self.item_embedding = nn.Embedding(n_items, r.dim)
        self.item_feature_embeddings = nn.ModuleList(nn.Embedding(sizes[j], dims[j]) for j in r.item_categories)
        d_item = r.dim + sum(dims[j] for j in r.item_categories) + len(r.item_numeric)
        self.item_tower = _mlp(d_item, spec.width, 1, r.dim)
        self.dropout = nn.Dropout(spec.dropout)
        # The catalogue: each item's features (indices into the category block, numeric values) and its count of
        # training interactions (the popularity ranking for cold-start users), filled before training.
        self.register_buffer("catalog_category", torch.zeros(n_items, len(r.item_categories), dtype=torch.int64))
        self.register_buffer("catalog_numeric", torch.zeros(n_items, len(r.item_numeric)))
        self.register_buffer("popularity", torch.zeros(n_items))
        index = torch.tensor(self.user_numeric, dtype=torch.int64)
        self.register_buffer("user_numeric_index", index, persistent=False)
        self.register_buffer("user_category_index", torch.tensor(self.user_cats, dtype=torch.int64), persistent=False)

    def user_vectors(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, dim): the user tower over the rows' user-side inputs."""
        parts: list[torch.Tensor] = []
        cat_index: torch.Tensor = self.user_category_index  # type: ignore[assignment]
        num_index: torch.Tensor = self.user_numeric_index  # type: ignore[assignment]
        if len(self.user_embeddings):
            cats = inputs["category"][:, cat_index]  # (B, K_user)
            parts.extend(emb(cats[:, j]) for j, emb in enumerate(self.user_embeddings))
        if len(self.user_numeric):
            parts.append(inputs["numeric"][:, num_index])
        if "vector" in inputs:
            parts.append(inputs["vector"])
        return self.user_tower(self.dropout(torch.cat(parts, dim=1)))

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """(n, dim): the item tower over `items` (catalogue indices), default the whole catalogue."""
        cat: torch.Tensor = self.catalog_category  # type: ignore[assignment]
        num: torch.Tensor = self.catalog_numeric  # type: ignore[assignment]
        if items is not None:
            cat, num = cat[items], num[items]
        parts = [self.item_embedding.weight if items is None else self.item_embedding(items)]
        parts.extend(emb(cat[:, j]) for j, emb in enumerate(self.item_feature_embeddings))
        if num.shape[1]:
            parts.append(num)
        return self.item_tower(torch.cat(parts, dim=1))

    def sampled_scores(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training with sampled negatives: (B, B + S) scores against the batch's own items (row i's at column i)
        and S items drawn uniformly from the catalogue, each corrected by the log of its chance of being a
        candidate (logQ: a popular item is often someone's positive in the batch), other rows' copies of a row's
        own item masked out."""
        items = inputs["category"][:, self.rec.item]  # (B,)
        n, s, b = self.item_embedding.num_embeddings, self.rec.negatives, len(items)
        s -= int(b + s == n)  # (B, n_items) scores are the full softmax's: a sampled output never has that width
        sampled = torch.randint(1, n, (s,), device=items.device)  # never the unknown bucket
        candidates = torch.cat([items, sampled])  # (B + S,)
        scores = self.user_vectors(inputs) @ self.item_vectors(candidates).T  # (B, B + S)
        pop: torch.Tensor = self.popularity  # type: ignore[assignment]
        share = (pop / pop.sum().clamp(min=1.0)).clamp(min=1e-12)
        q = torch.cat([(b * share[items]).clamp(max=1.0), torch.full((s,), s / (n - 1), device=items.device)])
        scores = scores - torch.log(q.clamp(min=1e-12))
        hit = candidates.view(1, -1) == items.view(-1, 1)  # (B, B + S): a row's own item elsewhere
        hit[torch.arange(b), torch.arange(b)] = False
        return scores.masked_fill(hit, float("-inf"))

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The user vector of each row (what `lakenet featurize` writes for users)."""
        return self.user_vectors(inputs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training and self.rec.negatives:
            return self.sampled_scores(inputs)
        return self.user_vectors(inputs) @ self.item_vectors().T  # (B, dim) × (dim, n_items) -> (B, n_items)
