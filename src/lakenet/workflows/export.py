"""`lakenet export`: a model as one ONNX or safetensors file, written only if its outputs match the model's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakenet.data.sources import open_table
from lakenet.errors import ConfigError, LakenetError, ModelError
from lakenet.workflows.common import resolve

if TYPE_CHECKING:
    from lakenet.models.bundle import Bundle

__all__ = ["ExportResult", "run_export"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # between the export and the registered model, on the rows checked
    rows_checked: int
    tolerance: float


def _sample_rows(bundle: Bundle, n: int = 32) -> dict[str, Any] | None:
    """Encoded rows of the table the model was trained on, when it is still readable (best effort)."""
    table, version = bundle.lineage.get("table"), bundle.lineage.get("table_version")
    if not table:
        return None
    try:
        snap = open_table(str(table), version if isinstance(version, int) else None)
        if not snap.fragments:
            return None
        rows = snap.read(snap.fragments[0], bundle.preprocessor.input_columns()).slice(0, n)
        enc = bundle.preprocessor.encode(rows, with_label=False)
    except LakenetError:
        return None
    return enc.inputs if enc.num_valid else None


def _check_inputs(bundle: Bundle) -> dict[str, Any]:
    """Random inputs of every kind, plus rows of the training table when it is readable."""
    import numpy as np

    inputs = bundle.preprocessor.example_inputs(16, seed=0)
    real = _sample_rows(bundle)
    if real is not None:
        inputs = {k: np.concatenate([inputs[k], real[k]]) for k in inputs}
    return inputs


def _write_and_compare(bundle: Bundle, fmt: str, tmp: Path, inputs: dict[str, Any], trust: tuple[str, ...]) -> float:
    from lakenet.inference.parity import parity
    from lakenet.models.export import OnnxModel, export_onnx, export_safetensors

    if fmt == "onnx":
        data = export_onnx(bundle, trusted=trust)
        tmp.write_bytes(data)
        return parity(bundle, OnnxModel(data, bundle.preprocessor.input_keys()), inputs, trusted=trust)
    from safetensors.torch import load_file

    from lakenet.inference.predictor import Predictor
    from lakenet.models.bundle import Bundle

    export_safetensors(bundle, tmp)
    reloaded = Bundle(bundle.spec, bundle.preprocessor, load_file(str(tmp)))
    return parity(bundle, Predictor(reloaded, trust_modules=trust).forward, inputs, trusted=trust)


def run_export(
    model: str, wd: Path, *, out: str | Path, fmt: str, tolerance: float, trust: tuple[str, ...]
) -> ExportResult:
    from lakenet.models.bundle import Bundle

    if fmt not in ("onnx", "safetensors"):
        raise ConfigError(f"--format must be onnx or safetensors, not {fmt!r}")
    bundle = Bundle.load(resolve(model, wd).bundle_dir)
    if not bundle.weights:
        raise ConfigError(f"{model} is already an ONNX export; export the registered model instead")
    inputs = _check_inputs(bundle)
    rows = len(next(iter(inputs.values())))
    dest = Path(out).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        diff = _write_and_compare(bundle, fmt, tmp, inputs, trust)
        if not diff <= tolerance:
            raise ModelError(
                f"Export parity check failed: max abs difference {diff:.3g} > tolerance {tolerance:g} on {rows} "
                "rows; nothing was written. Raise --tolerance if that is acceptable for this model."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(dest, fmt, diff, rows, tolerance)
