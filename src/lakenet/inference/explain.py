"""Why the model said that: Integrated Gradients (Captum) per prediction, reported per input column.

Attributions are taken where each column enters the network: the numeric block and the vectors as they are fed
in, each category's embedding, each text feature's token embeddings, and the image. Captum's
LayerIntegratedGradients interpolates all of them together from a baseline to the row, so the attributions of
one row sum to the difference between its output and the baseline's (completeness; the gap is reported).

The baseline is an average row: numbers at their training mean (0 after standardisation) with no missing flags,
every category at the unknown bucket, vectors at zero, every text empty (padding), and images at the
normalisation mean (0). The output explained is the log-probability of the predicted class (classification) or
the predicted value in the label's units (regression).

A model whose image path runs outside autograd (a frozen ONNX Runtime backbone) has no gradients to integrate.
Its columns are attributed by Shapley value sampling instead (Captum's ShapleyValueSampling: each input column
replaced by its baseline value, in random orders; every order's contributions add up to the output difference,
so the completeness gap stays at rounding level), and its image map by occlusion (Captum's Occlusion: the drop
in the output when a patch of 1/8 of each side is set to the baseline, spread over the patch's pixels). The
`method` column says which was used.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from lakenet.data.codecs.audio import AudioCodec
from lakenet.data.codecs.category import CategoryCodec
from lakenet.data.codecs.image import ImageCodec
from lakenet.data.codecs.text import TextCodec, bag_tokens, text_input_keys
from lakenet.data.codecs.vector import VectorCodec
from lakenet.errors import ModelError
from lakenet.inference.predictor import Predictor
from lakenet.models.bundle import Bundle

__all__ = ["REGIONS", "Explainer", "Explanation", "explain_batch_rows", "explain_schema"]

_GAP_TOLERANCE = 0.05  # a row's |gap| may be 5 % of |output − baseline output| ...
_GAP_FLOOR = 0.01  # ... or of this, when the output barely moved
_REFINEMENTS = 2  # at most two reruns with 4× the steps (50 → 200 → 800 by default)
_SHAPLEY_SAMPLES = 16  # random column orders when the model has no gradients (cost: samples × (columns + 1))
IG, SHAPLEY = "integrated_gradients", "shapley_sampling"
REGIONS = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")
_TOKEN = pa.struct([("column", pa.string()), ("token", pa.string()), ("attribution", pa.float64())])
_PAIR = pa.struct([("column", pa.string()), ("attribution", pa.float64())])
Texts = dict[str, list[Any]]  # text column -> its values, one per encoded row (to name the tokens)


@dataclass(frozen=True)
class _Slot:
    """Where one input column's attribution is found: a layer, and the part of its output that is the column's."""

    column: str
    layer: int  # index into the explainer's layers
    cols: slice | None = None  # numeric / vector block: the column's slots
    text: int | None = None  # text feature: its index among the texts
    image: bool = False


@dataclass
class Explanation:
    """Attributions of encoded rows: per column (rows × columns), image maps, token attributions."""

    columns: list[str]
    values: np.ndarray  # (N, columns): signed attributions, per input column
    output: np.ndarray  # (N,): what was explained (probability of the predicted class, or the value)
    baseline_output: np.ndarray  # (N,)
    gap: np.ndarray  # (N,): |sum of attributions − (output − baseline output)|
    target: np.ndarray  # (N,): the class explained (0 for regression)
    image_maps: np.ndarray | None = None  # (N, H, W): per-pixel attributions summed over channels
    tokens: list[list[tuple[str, str, float]]] = field(default_factory=list)  # per row: (column, token, attribution)
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (N,): integration steps used
    method: str = IG  # or SHAPLEY (columns) with occlusion (image map), for a model without gradients
    confidence: np.ndarray | None = None  # (N,): classification: the predicted class's probability, as predict's

    def share(self) -> np.ndarray:
        """Each column's share of the row's attribution mass (|attribution| / sum)."""
        mass = np.abs(self.values)
        return mass / np.maximum(mass.sum(1, keepdims=True), 1e-12)


def explain_schema(pre: Any, *, with_model: bool) -> pa.Schema:
    fields = [pa.field(pre.key, pa.string())]
    if pre.label.task == "classification":
        fields += [pa.field("prediction", pa.string()), pa.field("confidence", pa.float32())]
    else:
        fields.append(pa.field("prediction", pa.float64()))
    fields += [
        pa.field("output", pa.float64()),  # what the attributions explain
        pa.field("baseline_output", pa.float64()),
        pa.field("top", pa.list_(_PAIR)),  # the columns with the largest |attribution|, largest first
        pa.field("attributions", pa.map_(pa.string(), pa.float64())),  # every input column
        pa.field("completeness_gap", pa.float64()),
        pa.field("steps", pa.int32()),  # the integration steps used (more where the gap was too large)
        pa.field("method", pa.string()),  # integrated_gradients, or shapley_sampling (a model without gradients)
        pa.field("tokens", pa.list_(_TOKEN)),  # text features: per token
        pa.field("image_map", pa.binary()),  # image feature: a heat-map PNG
        pa.field("regions", pa.map_(pa.string(), pa.float64())),  # image feature: share of the map per region
        pa.field("error", pa.string()),
    ]
    if with_model:
        fields += [pa.field("model_name", pa.string()), pa.field("model_version", pa.string())]
    return pa.schema(fields)


def explain_batch_rows(pre: Any) -> int:
    """Rows per attribution pass: n_steps interpolated copies of each row go through the model at once, so
    columns-only models take 256 rows (4x fewer passes; 1.3-2x the rows/s of 64 measured on an MLP), and models
    with images, audio or text 64, whose copies are large."""
    return 256 if set(pre.input_keys()) <= {"numeric", "category", "vector"} else 64


class Explainer:
    """Loads a bundle once; `explain(inputs)` for encoded rows, `__call__(arrow batch) -> arrow batch` for rows."""

    def __init__(
        self,
        bundle: str | Path | Bundle,
        *,
        device: str = "cpu",
        n_steps: int = 50,
        top_k: int = 5,
        batch_size: int = 64,
        model_name: str | None = None,
        model_version: str | None = None,
        trust_modules: Iterable[str] = (),
    ) -> None:
        self.predictor = Predictor(bundle, device=device, model_name=model_name, model_version=model_version,
                                   trust_modules=trust_modules)  # fmt: skip
        if self.predictor.model is None:
            raise ModelError("explain needs the model's torch weights; this bundle runs in ONNX Runtime only")
        self.model: nn.Module = self.predictor.model
        self.pre = self.predictor.pre
        self.n_steps, self.top_k, self.batch_size = n_steps, top_k, batch_size
        self.model_name, self.model_version = model_name, model_version
        self.keys = self.pre.input_keys()
        self.layers, self.slots = self._layout()
        self.columns = [s.column for s in self.slots]
        self.method = IG if _differentiable(self.model) else SHAPLEY
        self._mode = torch.tensor([1 if s.vocab or s.buckets else 0 for s in self.pre.categories], dtype=torch.int64)

    # ---- where each column enters the network ----------------------------------------------------------------
    def _layout(self) -> tuple[list[nn.Module], list[_Slot]]:
        tab = getattr(self.model, "tabular", None)
        if tab is None:
            raise ModelError(
                "explain works on lakenet's built-in architectures (mlp, resnet, audiocnn, autoencoder, transfer); "
                f"this model ({type(self.model).__name__}) has no TabularEncoder to take attributions at"
            )
        layers: list[nn.Module] = []
        slots: list[_Slot] = []

        def layer(m: nn.Module) -> int:
            layers.append(m)
            return len(layers) - 1

        numeric = layer(tab.numeric_input) if self.pre.numeric_width else -1
        vector = layer(tab.vector_input) if self.pre.vectors else -1
        n_at = v_at = cat_i = text_i = 0
        for c in self.pre.features:
            col = c.column
            if isinstance(c, CategoryCodec):
                slots.append(_Slot(col, layer(tab.embeddings[cat_i])))
                cat_i += 1
            elif isinstance(c, VectorCodec):
                slots.append(_Slot(col, vector, cols=slice(v_at, v_at + c.state.dim)))
                v_at += c.state.dim
            elif isinstance(c, TextCodec):
                enc = tab.texts[text_i]
                emb = enc.embedding if hasattr(enc, "embedding") else enc.model.get_input_embeddings()
                slots.append(_Slot(col, layer(emb), text=text_i))
                text_i += 1
            elif isinstance(c, ImageCodec | AudioCodec):  # an audio clip's map is over mel bands × time
                where = self.model.image_input if isinstance(c, ImageCodec) else self.model.audio_input
                assert isinstance(where, nn.Module)
                slots.append(_Slot(col, layer(where), image=True))
            if c.numeric_width():
                w = c.numeric_width()
                slots.append(_Slot(col, numeric, cols=slice(n_at, n_at + w)))
                n_at += w
        return layers, _merge(slots)

    # ---- attributions of encoded rows ------------------------------------------------------------------------
    def _forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(dict(zip(self.keys, tensors, strict=True)))
        if self.predictor.classification:
            return torch.log_softmax(out.float(), dim=1)
        return out.float().view(-1, 1) * float(self.pre.label.std) + float(self.pre.label.mean)

    def _baselines(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        out = []
        for k, t in zip(self.keys, tensors, strict=True):
            if k.endswith(".mask"):
                out.append(t.clone())  # masks stay the row's own
            elif k == "category":  # the commonest value (index 1; hashed columns: their first bucket)
                out.append(torch.ones_like(t) * self._mode.to(t.device))
            else:
                out.append(torch.zeros_like(t))
        return tuple(out)

    def explain(self, inputs: dict[str, np.ndarray], texts: Texts | None = None) -> Explanation:
        """Attributions of encoded rows (as `Preprocessor.encode` makes them), in chunks of `batch_size`.
        `texts`: the raw values of the text columns, so bag tokens are named by their words."""
        n = len(next(iter(inputs.values()))) if inputs else 0
        b = self.batch_size
        parts = [self._chunk({k: v[s : s + b] for k, v in inputs.items()},
                             {c: v[s : s + b] for c, v in (texts or {}).items()}) for s in range(0, n, b)]  # fmt: skip
        if not parts:
            empty = np.zeros(0)
            zeros = np.zeros((0, len(self.columns)))
            return Explanation(self.columns, zeros, empty, empty, empty, empty, method=self.method)
        maps = [p.image_maps for p in parts if p.image_maps is not None]

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return Explanation(
            self.columns,
            joined("values"),
            joined("output"),
            joined("baseline_output"),
            joined("gap"),
            joined("target"),
            image_maps=np.concatenate(maps) if maps else None,
            tokens=[t for p in parts for t in p.tokens],
            steps=joined("steps"),
            method=self.method,
            confidence=joined("confidence") if self.predictor.classification else None,
        )

    def _chunk(self, inputs: dict[str, np.ndarray], texts: Texts) -> Explanation:
        """Attributions with `n_steps`; rows whose completeness gap exceeds _GAP_TOLERANCE of their output change
        are done again with 4× the steps, up to _REFINEMENTS times (a transformer's saturated path needs more)."""
        if self.method == SHAPLEY:
            return self._perturb(inputs, texts)
        ex = self._attribute(inputs, texts, self.n_steps)
        steps = self.n_steps
        for _ in range(_REFINEMENTS):
            change = np.maximum(np.abs(ex.output - ex.baseline_output), _GAP_FLOOR)
            bad = np.flatnonzero(ex.gap > _GAP_TOLERANCE * change)
            if not len(bad):
                break
            steps *= 4
            redo = self._attribute({k: v[bad] for k, v in inputs.items()},
                                   {c: [v[i] for i in bad] for c, v in texts.items()}, steps)  # fmt: skip
            ex.values[bad], ex.gap[bad], ex.steps[bad] = redo.values, redo.gap, redo.steps
            if ex.image_maps is not None and redo.image_maps is not None:
                ex.image_maps[bad] = redo.image_maps
            for j, i in enumerate(bad):
                if ex.tokens:
                    ex.tokens[i] = redo.tokens[j]
        return ex

    def _attribute(self, inputs: dict[str, np.ndarray], texts: Texts, n_steps: int) -> Explanation:
        from lakenet.models.text import full_length

        layer_ig = summed_layer_ig()

        tensors, baselines, idx, f_x, f_b, conf = self._ends(inputs)
        with warnings.catch_warnings():
            # Captum warns whenever several layers are given; ours are independent (each is where one input
            # enters the network, none is computed from another), which is the condition it asks about.
            warnings.filterwarnings("ignore", message="Multiple layers provided")
            lig = layer_ig(self._forward, self.layers)
        with full_length():
            attrs, delta = lig.attribute(tensors, baselines=baselines, target=idx, n_steps=n_steps,
                                         return_convergence_delta=True)  # fmt: skip
        attrs = [a.detach().float().cpu().numpy() for a in (attrs if isinstance(attrs, list) else [attrs])]
        values, maps, tokens = self._per_column(attrs, inputs, texts)
        gap = np.abs(values.sum(1) - (f_x - f_b))
        del delta  # Captum's own estimate; the gap above is measured on the per-column sums actually reported
        steps = np.full(len(gap), n_steps, dtype=np.int64)
        target = idx.cpu().numpy()
        return Explanation(self.columns, values, f_x, f_b, gap, target, maps, tokens, steps, confidence=conf)

    def _ends(
        self, inputs: dict[str, np.ndarray]
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor, np.ndarray, np.ndarray, Any]:
        """The rows and their baselines as tensors, the class explained (decided on the probabilities predict
        computes, so the class and confidence are predict's, threshold included), both outputs for that class, and
        the confidence (None for regression)."""
        from lakenet.models.text import full_length

        dev = self.predictor.device
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(inputs[k])).to(dev) for k in self.keys)
        baselines = self._baselines(tensors)
        with torch.no_grad(), full_length():
            out = self._forward(*tensors)
            base = self._forward(*baselines)
        conf = None
        if self.predictor.classification:
            probs = self.predictor.forward(inputs)
            target = self.predictor.decide(probs)
            conf = probs[np.arange(len(target)), target]
        else:
            target = np.zeros(len(out), dtype=np.int64)
        idx = torch.from_numpy(np.asarray(target, dtype=np.int64)).to(dev)
        rows = torch.arange(len(idx), device=dev)
        f_x = out[rows, idx] if out.shape[1] > 1 else out[:, 0]
        f_b = base[rows, idx] if base.shape[1] > 1 else base[:, 0]
        f_x64, f_b64 = f_x.cpu().numpy().astype(np.float64), f_b.cpu().numpy().astype(np.float64)
        return tensors, baselines, idx, f_x64, f_b64, conf

    def _perturb(self, inputs: dict[str, np.ndarray], texts: Texts) -> Explanation:
        """No gradients: Shapley value sampling over the input columns, occlusion for the image map."""
        from captum.attr import Occlusion, ShapleyValueSampling

        from lakenet.models.text import full_length

        tensors, baselines, idx, f_x, f_b, conf = self._ends(inputs)
        masks = self._feature_masks(tensors)
        with torch.no_grad(), full_length():
            per_input = ShapleyValueSampling(self._forward).attribute(
                tensors, baselines=baselines, target=idx, feature_mask=masks, n_samples=_SHAPLEY_SAMPLES
            )
        values = np.zeros((len(idx), len(self.slots)))
        for j in range(len(self.slots)):  # every element of a column's group carries the column's value
            for a, m in zip(per_input, masks, strict=True):
                hit = torch.nonzero(m.reshape(-1) == j)
                if len(hit):
                    values[:, j] = a.reshape(len(a), -1)[:, int(hit[0])].float().cpu().numpy()
                    break
        maps = None
        if "image" in self.keys:
            at = self.keys.index("image")
            image = tensors[at]
            win = (image.shape[1], max(image.shape[2] // 8, 1), max(image.shape[3] // 8, 1))

            def image_only(img: torch.Tensor) -> torch.Tensor:  # one perturbation per pass: same batch size
                return self._forward(*(img if i == at else t for i, t in enumerate(tensors)))

            with torch.no_grad(), full_length():
                occ = Occlusion(image_only).attribute(image, sliding_window_shapes=win, strides=win,
                                                      baselines=baselines[at], target=idx)  # fmt: skip
            maps = occ.sum(1).float().cpu().numpy()
        gap = np.abs(values.sum(1) - (f_x - f_b))
        steps = np.zeros(len(gap), dtype=np.int64)
        return Explanation(self.columns, values, f_x, f_b, gap, idx.cpu().numpy(), maps, [[] for _ in gap], steps,
                           method=SHAPLEY, confidence=conf)  # fmt: skip

    def _feature_masks(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One feature id per input column (its slot index), shaped to broadcast over each input tensor."""
        masks: dict[str, torch.Tensor] = {}
        for k, t in zip(self.keys, tensors, strict=True):
            masks[k] = torch.full((1, *t.shape[1:]), -1, dtype=torch.int64, device=t.device)
        cat_i = 0
        for j, s in enumerate(self.slots):
            codec = next(c for c in self.pre.features if c.column == s.column)
            if s.image:
                masks["image"][:] = j
            elif s.text is not None:
                ids_key, mask_key = text_input_keys(codec.state.name)
                for k in (ids_key, mask_key):
                    if k in masks:
                        masks[k][:] = j  # the attention mask keeps the row's own (its baseline), ids go to padding
            elif isinstance(codec, CategoryCodec):
                masks["category"][:, cat_i] = j
                cat_i += 1
            elif s.cols is not None:
                key = "vector" if isinstance(codec, VectorCodec) else "numeric"
                masks[key][:, s.cols] = j
        for k, m in masks.items():
            if bool((m < 0).any()):
                raise ModelError(f"explain cannot tell which column input {k!r} belongs to")
        return tuple(masks[k] for k in self.keys)

    def _per_column(
        self, attrs: list[np.ndarray], inputs: dict[str, np.ndarray], texts: Texts
    ) -> tuple[np.ndarray, np.ndarray | None, list[list[tuple[str, str, float]]]]:
        n = attrs[0].shape[0]
        values = np.zeros((n, len(self.slots)))
        maps = None
        tokens: list[list[tuple[str, str, float]]] = [[] for _ in range(n)]
        for j, s in enumerate(self.slots):
            a = attrs[s.layer]
            if s.cols is not None:
                values[:, j] = a[:, s.cols].sum(1)
            elif s.image:
                per_pixel = a.sum(1)  # (N, C, H, W) -> (N, H, W)
                values[:, j] = per_pixel.reshape(n, -1).sum(1)
                maps = per_pixel
            else:
                per_pos = a.reshape(n, a.shape[1], -1).sum(2) if a.ndim == 3 else a.reshape(n, -1)
                values[:, j] = per_pos.sum(1)
                if s.text is not None:
                    self._tokens(s, per_pos, inputs, texts.get(s.column), tokens)
        return values, maps, tokens

    def _tokens(
        self,
        s: _Slot,
        per_pos: np.ndarray,
        inputs: dict[str, np.ndarray],
        raw: list[Any] | None,
        out: list[list[tuple[str, str, float]]],
    ) -> None:
        """Per token, its attribution: the words and bigrams a bag hashed (named when the raw text is known),
        or the tokenizer's pieces (padding left out)."""
        codec = next(c for c in self.pre.features if isinstance(c, TextCodec) and c.column == s.column)
        ids_key, mask_key = text_input_keys(codec.state.name)
        ids = inputs[ids_key]
        mask = inputs.get(mask_key, ids != 0)
        for i in range(len(ids)):
            if codec.state.kind == "bag":
                names = bag_tokens(raw[i], codec.state.max_length) if raw is not None else []
            else:
                tok = codec.tokenizer()
                names = [tok.id_to_token(int(t)) or "" for t in ids[i]]
            for p in np.flatnonzero(mask[i]):
                name = names[p] if p < len(names) else f"#{p}"
                out[i].append((s.column, name, float(per_pos[i, p])))

    # ---- Arrow rows in, Arrow rows out -----------------------------------------------------------------------
    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        self.pre.require_inputs(set(batch.schema.names), what="the model", fix="explain a table with its columns")
        enc = self.pre.encode(batch, with_label=False)
        rows = np.flatnonzero(enc.valid)
        text_cols = [c.column for c in self.pre.features if isinstance(c, TextCodec)]
        texts = {c: [batch.column(c)[int(i)].as_py() for i in rows] for c in text_cols}
        return self._rows(batch, enc, rows, self.explain(enc.inputs, texts))

    def _rows(self, batch: Any, enc: Any, rows: np.ndarray, ex: Explanation) -> pa.RecordBatch:
        n = batch.num_rows
        at = {int(r): i for i, r in enumerate(rows)}
        cols: dict[str, list[Any]] = {k: [None] * n for k in explain_schema(self.pre, with_model=False).names}
        if self.pre.key in batch.schema.names:  # a request to the server may have no key: nulls then
            cols[self.pre.key] = [str(v) if v is not None else None for v in batch.column(self.pre.key).to_pylist()]
        cols["error"] = enc.reasons()
        for r, i in at.items():
            t = int(ex.target[i])
            if self.predictor.classification:
                cols["prediction"][r] = self.predictor.classes[t]
                assert ex.confidence is not None
                cols["confidence"][r] = float(ex.confidence[i])
            else:
                cols["prediction"][r] = float(ex.output[i])
            cols["output"][r], cols["baseline_output"][r] = float(ex.output[i]), float(ex.baseline_output[i])
            pairs = list(zip(ex.columns, ex.values[i].tolist(), strict=True))
            cols["attributions"][r] = pairs
            top = sorted(pairs, key=lambda p: -abs(p[1]))[: self.top_k]
            cols["top"][r] = [{"column": c, "attribution": v} for c, v in top]
            cols["completeness_gap"][r] = float(ex.gap[i])
            cols["steps"][r] = int(ex.steps[i])
            cols["method"][r] = ex.method
            if ex.tokens and ex.tokens[i]:
                cols["tokens"][r] = [{"column": c, "token": tk, "attribution": v} for c, tk, v in ex.tokens[i]]
            if ex.image_maps is not None:
                cols["image_map"][r] = heat_map_png(ex.image_maps[i])
                cols["regions"][r] = list(region_shares(ex.image_maps[i]).items())
        schema = explain_schema(self.pre, with_model=self.model_name is not None)
        if self.model_name is not None:
            cols["model_name"], cols["model_version"] = [self.model_name] * n, [self.model_version] * n
        return pa.RecordBatch.from_pydict({k: cols[k] for k in schema.names}, schema=schema)


_SUMMED_LIG: list[type] = []


def summed_layer_ig() -> type:
    """Captum's LayerIntegratedGradients, whose gradient step differentiates the sum of the interpolated batch's
    outputs in one autograd call instead of the tuple of its scalar outputs (`torch.unbind`). The gradients are
    the same: autograd adds up the contributions of a tuple's outputs (captum issue #713). But the tuple makes
    torch build one ones-tensor per output in Python: 12,800 a pass for 256 rows × 50 steps, 56 % of an MLP's
    explain time. Everything else (interpolation, Gauss-Legendre weights, multiplying by the inputs, the
    convergence delta) is Captum's. Where Captum has no `_make_gradient_func` to override (another version), or
    the layers' inputs are attributed or several devices used, Captum's own step runs."""
    if _SUMMED_LIG:
        return _SUMMED_LIG[0]
    from captum._utils.common import _run_forward
    from captum.attr import LayerIntegratedGradients

    class SummedLayerIntegratedGradients(LayerIntegratedGradients):
        def _make_gradient_func(self, num_outputs_cumsum: Any, attribute_to_layer_input: bool,
                                grad_kwargs: Any) -> Any:  # fmt: skip
            stock = super()._make_gradient_func(num_outputs_cumsum, attribute_to_layer_input, grad_kwargs)
            if attribute_to_layer_input or self.device_ids:
                return stock
            layers = self.layer if isinstance(self.layer, list) else [self.layer]
            cum = [int(c) for c in num_outputs_cumsum]

            def gradient_func(forward_fn: Any, inputs: Any, target_ind: Any = None,
                              additional_forward_args: Any = None) -> tuple[torch.Tensor, ...]:  # fmt: skip
                inputs = inputs if isinstance(inputs, tuple) else (inputs,)

                def hook(i: int, module: nn.Module, args: Any, out: Any) -> Any:  # the layer gives the scaled input
                    return inputs[cum[i] : cum[i + 1]] if isinstance(out, tuple) else inputs[cum[i]]

                with torch.autograd.set_grad_enabled(True):
                    handles = [layer.register_forward_hook(partial(hook, i)) for i, layer in enumerate(layers)]
                    try:
                        output = _run_forward(self.forward_func, (), target_ind, additional_forward_args)
                    finally:
                        for h in handles:
                            h.remove()
                    assert isinstance(output, torch.Tensor) and output[0].numel() == 1
                    return torch.autograd.grad(output.sum(), inputs, **(grad_kwargs or {}))

            return gradient_func

    cls = SummedLayerIntegratedGradients if hasattr(LayerIntegratedGradients, "_make_gradient_func") else None
    _SUMMED_LIG.append(cls or LayerIntegratedGradients)
    return _SUMMED_LIG[0]


def _differentiable(model: nn.Module) -> bool:
    """False when part of the network runs outside autograd (a frozen ONNX Runtime backbone)."""
    from lakenet.models.pretrained import OnnxBackbone

    return not any(isinstance(m, OnnxBackbone) for m in model.modules())


def _merge(slots: list[_Slot]) -> list[_Slot]:
    """One slot per input column, in the preprocessor's order (a column encoded in one place)."""
    seen: dict[str, _Slot] = {}
    for s in slots:
        if s.column in seen:
            raise ModelError(f"column {s.column!r} is encoded twice; explain reports one attribution per column")
        seen[s.column] = s
    return list(seen.values())


def region_shares(m: np.ndarray) -> dict[str, float]:
    """The share of a map's |attribution| mass in each ninth of the image (3 × 3 regions)."""
    mass = np.abs(m)
    total = max(float(mass.sum()), 1e-12)
    h, w = mass.shape
    ys, xs = np.array_split(np.arange(h), 3), np.array_split(np.arange(w), 3)
    return {REGIONS[3 * i + j]: float(mass[np.ix_(ys[i], xs[j])].sum() / total) for i in range(3) for j in range(3)}


def heat_map_png(m: np.ndarray, *, scale: int = 4) -> bytes:
    """|attribution| per pixel as a small PNG (magma colours, each pixel `scale` × `scale`)."""
    from matplotlib import colormaps
    from PIL import Image

    mass = np.abs(m)
    norm = mass / max(float(mass.max()), 1e-12)
    rgb = (colormaps["magma"](norm)[..., :3] * 255).astype(np.uint8)
    img = Image.fromarray(rgb).resize((m.shape[1] * scale, m.shape[0] * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
