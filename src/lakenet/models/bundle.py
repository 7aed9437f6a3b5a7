"""The model bundle: one directory with weights (safetensors) and everything else as JSON — no pickle.

The same bundle feeds batch scoring, the MLflow pyfunc model and serving, so training and serving cannot drift.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lakenet._version import __version__
from lakenet.data.encoders import Preprocessor
from lakenet.errors import ModelError
from lakenet.models.registry import build_model
from lakenet.models.spec import ModelSpec

__all__ = ["BUNDLE_FORMAT", "Bundle", "sha256_file", "warn_unchecked"]

BUNDLE_FORMAT = 1
_META = "bundle.json"
_WEIGHTS = "weights.safetensors"
log = logging.getLogger("lakenet.models")
_warned: set[str] = set()


@dataclass
class Bundle:
    """Architecture spec + preprocessing + lineage; `weights` is the state dict (CPU tensors)."""

    spec: ModelSpec
    preprocessor: Preprocessor
    weights: dict[str, torch.Tensor]
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)  # training data profile summary
    training: dict[str, Any] = field(default_factory=dict)  # history, best epoch, steps
    onnx: bytes | None = None  # an exported ONNX graph (a bundle loaded from a .onnx file has no torch weights)
    source: Path | None = None  # where it was loaded from (for messages)

    def build(self, device: str | torch.device = "cpu", *, trusted: Iterable[str] = ()) -> nn.Module:
        """The network with the bundle's weights, in eval mode. A custom architecture is built only if it is in
        `trusted` (or LAKENET_TRUSTED_MODULES)."""
        if not self.weights and self.onnx is not None:
            raise ModelError("This model was loaded from an ONNX export: it runs in ONNX Runtime (runtime onnx) only")
        model = build_model(self.spec, trusted=trusted)
        try:
            missing, unexpected = model.load_state_dict(self.weights, strict=False)
        except RuntimeError as err:  # a tensor of the wrong shape
            first = next((ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln), str(err)[:300])
            where = self.source / _WEIGHTS if self.source is not None else "The bundle's weights"
            raise ModelError(
                f"{where} does not fit architecture {self.spec.architecture!r}: {first}. The weights file does "
                "not belong to this bundle.json; re-export or re-register the model."
            ) from None
        if missing or unexpected:
            raise ModelError(
                f"Bundle weights do not fit architecture {self.spec.architecture!r} "
                f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
            )
        return model.to(device).eval()

    def signature(self) -> list[dict[str, str]]:
        return self.preprocessor.signature()

    def requirements(self) -> list[str]:
        """Packages beyond lakenet's own that this model needs at inference time."""
        reqs = []
        kind = self.spec.backbone.kind if self.spec.backbone is not None else None
        if kind == "onnx":
            reqs.append("onnxruntime>=1.18")
        if kind == "hf" or any(t.kind == "pretrained" for t in self.spec.texts):
            reqs += ["transformers>=4.40", "tokenizers>=0.19"]
        return reqs

    def save(self, path: str | Path) -> Path:
        """Write atomically: a partly written bundle is never visible at `path`. bundle.json records the SHA-256
        of the weights file, checked whenever the bundle is loaded."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.weights.items()}, str(tmp / _WEIGHTS))
        meta = {**self.meta(), "files": {_WEIGHTS: sha256_file(tmp / _WEIGHTS)}}
        (tmp / _META).write_text(json.dumps(meta, indent=2, default=str))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return dest

    @staticmethod
    def digest(path: str | Path) -> str:
        """SHA-256 of a saved bundle's bundle.json, which holds the weights' own digest: one value that pins the
        whole bundle (recorded in the registry at registration)."""
        return sha256_file(Path(path) / _META)

    def meta(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-able data (bundle.json)."""
        return {
            "format": BUNDLE_FORMAT,
            "lakenet_version": __version__,
            "spec": self.spec.to_dict(),
            "preprocessor": self.preprocessor.to_dict(),
            "signature": self.signature(),
            "lineage": self.lineage,
            "metrics": self.metrics,
            "profile": self.profile,
            "training": self.training,
        }

    @classmethod
    def _from_meta(
        cls, meta: dict[str, Any], where: Path, weights: dict[str, torch.Tensor], onnx: bytes | None
    ) -> Bundle:
        if not isinstance(meta, dict) or not isinstance(meta.get("format", 0), int):
            raise ModelError(f"{where}: {_META} is not a lakenet bundle description")
        if meta.get("format", 0) > BUNDLE_FORMAT:
            raise ModelError(
                f"Bundle {where} has format {meta['format']}, newer than this lakenet ({BUNDLE_FORMAT}); "
                "upgrade lakenet"
            )
        try:
            preprocessor = Preprocessor.from_dict(meta["preprocessor"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(
                f"{where}: the preprocessing in {_META} is damaged ({type(err).__name__}: {err})"
            ) from None
        return cls(
            spec=ModelSpec.from_dict(meta.get("spec"), where=str(where)),  # type: ignore[arg-type]
            preprocessor=preprocessor,
            weights=weights,
            lineage=meta.get("lineage", {}),
            metrics=meta.get("metrics", {}),
            profile=meta.get("profile", {}),
            training=meta.get("training", {}),
            onnx=onnx,
            source=where,
        )

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """A bundle directory, or an ONNX file written by `lakenet export --format onnx`. The weights must match
        the SHA-256 that bundle.json records (bundles written before lakenet recorded it load unchecked, with a
        warning)."""
        p = Path(path)
        if p.is_file() and p.suffix.lower() == ".onnx":
            return cls._load_onnx(p)
        if not (p / _META).is_file() or not (p / _WEIGHTS).is_file():
            raise ModelError(f"{p} is not a lakenet model bundle (expected {_META} and {_WEIGHTS})")
        try:
            meta = json.loads((p / _META).read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ModelError(f"{p / _META} is not valid JSON ({err}); the bundle is damaged. Re-download it.") from None
        expected = (meta.get("files") or {}).get(_WEIGHTS) if isinstance(meta, dict) else None
        if expected is not None and sha256_file(p / _WEIGHTS) != expected:
            raise ModelError(
                f"{p / _WEIGHTS} does not match the SHA-256 recorded in its {_META}: the file was changed or damaged "
                "after the model was saved. Do not use it; download the model again (delete this copy) or "
                "re-register it from a trusted copy."
            )
        bundle = cls._from_meta(meta, p, _load_weights(p / _WEIGHTS), None)
        if expected is None:  # it loads (old bundles must), but the user is told nothing vouches for its weights
            warn_unchecked(
                str(p.resolve()),
                f"{p / _META} records no SHA-256 of {_WEIGHTS} (a bundle saved before lakenet recorded one)",
                "save it again from a copy you trust (Python: Bundle.load(path).save(path)) or re-register the model",
            )
        return bundle

    @classmethod
    def _load_onnx(cls, p: Path) -> Bundle:
        import onnx

        data = p.read_bytes()
        try:
            props = {m.key: m.value for m in onnx.load_from_string(data).metadata_props}
        except Exception as err:
            raise ModelError(f"{p} is not a readable ONNX file: {str(err).splitlines()[0][:200]}") from None
        if "lakenet.bundle" not in props:
            raise ModelError(
                f"{p} is an ONNX model, but not one exported by lakenet (it has no preprocessing). To build on it, "
                f"train with model.backbone: {p}"
            )
        return cls._from_meta(json.loads(props["lakenet.bundle"]), p, {}, data)


def warn_unchecked(key: str, why: str, fix: str) -> None:
    """Say (once per process and model) that a model is loaded without an integrity check: old bundles and
    registrations still load, but the user must know a changed or damaged file would go unnoticed."""
    if key in _warned:
        return
    _warned.add(key)
    log.warning(
        "%s: its weights cannot be integrity-checked, so a changed or damaged file would go unnoticed. "
        "To record a digest, %s.",
        why,
        fix,
    )


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(
            f"{path} is not a readable safetensors file ({str(err).splitlines()[0][:200]}): truncated or damaged. "
            "Download the model again or re-register it."
        ) from None
