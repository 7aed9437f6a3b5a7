"""Export a bundle to ONNX (for ONNX Runtime, here or in any other stack) or to one safetensors file, and check
that the export computes what the bundle computes.

An ONNX export takes the encoded inputs (the keys of `Preprocessor.input_keys()`, batch first) and returns the
final outputs: class probabilities (N, classes) or values in the label's own units (N,). The bundle's JSON rides
along in the graph's metadata, so `lakenet predict` and `lakenet serve` run an exported file directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lakenet.errors import ModelError
from lakenet.models.bundle import Bundle

__all__ = ["OnnxModel", "bundle_onnx", "export_onnx", "export_safetensors", "onnx_bundle_meta"]

_OPSET = 17


class _Exported(nn.Module):
    """The model with positional inputs and final outputs (probabilities, or de-standardised values)."""

    def __init__(self, model: nn.Module, keys: list[str], classification: bool, mean: float, std: float) -> None:
        super().__init__()
        self.model, self.keys, self.classification = model, keys, classification
        self.mean, self.std = mean, std

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(dict(zip(self.keys, tensors, strict=True)))
        if self.classification:
            return torch.softmax(out.float(), dim=1)  # (N, classes)
        return out.float().view(-1) * self.std + self.mean  # (N,)


def export_onnx(bundle: Bundle, *, trusted: tuple[str, ...] = ()) -> bytes:
    """The bundle's model as an ONNX graph with the bundle's JSON in its metadata."""
    import onnx

    if bundle.spec.backbone is not None and bundle.spec.backbone.kind == "onnx":
        raise ModelError(
            "This model's backbone already runs in ONNX Runtime inside the torch model; exporting the combined "
            "graph is not supported. Serve and score it with the torch runtime."
        )
    pre = bundle.preprocessor
    keys = pre.input_keys()
    model = bundle.build("cpu", trusted=trusted)
    label = pre.label
    wrapped = _Exported(model, keys, label.task == "classification", float(label.mean), float(label.std)).eval()
    example = pre.example_inputs(2, seed=0)
    args = tuple(torch.from_numpy(example[k]) for k in keys)
    dynamic: dict[str, dict[int, str]] = {k: {0: "n"} for k in keys}
    for k in keys:
        if k.startswith("text."):
            dynamic[k] = {0: "n", 1: "tokens"}
    dynamic["output"] = {0: "n"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapped, args, buf,  # type: ignore[arg-type]
            input_names=keys, output_names=["output"], dynamic_axes=dynamic,
            opset_version=_OPSET, dynamo=False,
        )  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    meta = onnx_bundle_meta(bundle)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "lakenet"
    return bytes(proto.SerializeToString())


def onnx_bundle_meta(bundle: Bundle) -> dict[str, str]:
    meta = {
        "lakenet.bundle": json.dumps(bundle.meta()),
        "lakenet.inputs": json.dumps(bundle.preprocessor.input_keys()),
    }
    if bundle.preprocessor.image is not None:
        meta["lakenet.image_mean"] = json.dumps(bundle.preprocessor.image.mean)
        meta["lakenet.image_std"] = json.dumps(bundle.preprocessor.image.std)
    return meta


def export_safetensors(bundle: Bundle, path: Path) -> None:
    """The weights in one safetensors file, with the spec, preprocessing and lineage as JSON metadata (usable
    as `model.backbone`, or by any safetensors reader)."""
    from safetensors.torch import save_file

    meta = bundle.meta()
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in bundle.weights.items()},
        str(path),
        metadata={
            "lakenet.format": str(meta["format"]),
            "lakenet.spec": json.dumps(meta["spec"]),
            "lakenet.preprocessor": json.dumps(meta["preprocessor"]),
            "lakenet.lineage": json.dumps(meta["lineage"], default=str),
        },
    )


class OnnxModel:
    """Runs an exported graph in ONNX Runtime: encoded inputs (numpy) -> final outputs (numpy)."""

    def __init__(self, data: bytes, keys: list[str], threads: int | None = None) -> None:
        from lakenet.models.pretrained import ort_session

        self.session = ort_session(data, threads)
        self.keys = keys
        names = [i.name for i in self.session.get_inputs()]
        if names != keys:
            raise ModelError(f"ONNX graph inputs {names} do not match the bundle's encoded inputs {keys}")

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: np.ascontiguousarray(inputs[k]) for k in self.keys}
        return np.asarray(self.session.run(["output"], feed)[0])


def _digest(bundle_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("bundle.json", "weights.safetensors"):
        with (bundle_dir / name).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def _private_cache() -> Path | None:
    """The user's own cache folder for exported graphs (mode 0700). Not a shared temp path: another local user
    could plant a graph there under the name the next export would look for. None if it is not private."""
    import platformdirs

    cache = Path(platformdirs.user_cache_dir("lakenet")) / "onnx"
    try:
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = cache.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return cache


def bundle_onnx(bundle: Bundle, bundle_dir: Path | None, *, trusted: tuple[str, ...] = ()) -> bytes:
    """The bundle's ONNX graph, exported once per bundle content and kept in the user's private cache (exporting
    a ResNet takes seconds; every scoring process would pay it)."""
    if bundle.onnx is not None:
        return bundle.onnx
    cache = _private_cache()
    if cache is None or bundle_dir is None or not (bundle_dir / "weights.safetensors").is_file():
        return export_onnx(bundle, trusted=trusted)
    path = cache / f"{_digest(bundle_dir)}.onnx"
    if path.is_file():
        return path.read_bytes()
    data = export_onnx(bundle, trusted=trusted)
    try:
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable temp dir only costs the next process an export
    return data
