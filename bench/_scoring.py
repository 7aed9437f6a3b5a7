"""Shared set-up for the scoring benchmarks: a ResNet-18-sized bundle, a Delta table of JPEGs, and the bare
baselines (torch on decoded tensors, ONNX Runtime on the same tensors)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from lakenet.data.encoders import ImageState, LabelState, Preprocessor
from lakenet.inference.predictor import _CPU_CHUNK_VALUES
from lakenet.models.bundle import Bundle
from lakenet.models.registry import build_model
from lakenet.models.spec import ModelSpec

__all__ = ["BarePool", "ScoringSetup", "bare_ort", "bare_torch", "make_setup"]


@dataclass
class ScoringSetup:
    root: Path
    table: Path
    bundle_dir: Path
    rows: int
    size: int
    spec: ModelSpec
    decoded: np.ndarray  # (N, 3, S, S) float32, the predictor's own preprocessing (only 2 rows if decode=False)
    flops_per_image: float

    @property
    def chunk(self) -> int:
        """Rows per forward pass: the Predictor's CPU chunk for these images, so baselines run the same."""
        return max(1, min(256, _CPU_CHUNK_VALUES // int(np.prod(self.decoded.shape[1:]))))


def _jpegs(n: int, size: int, seed: int) -> list[bytes]:
    """Real photographs (scikit-learn's sample images), cropped and flipped into n distinct JPEGs."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(img) for img in load_sample_images().images]  # (427, 640, 3) uint8 each
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        crop = int(min(photo.shape[:2]) * rng.uniform(0.5, 1.0))
        y = rng.integers(0, photo.shape[0] - crop + 1)
        x = rng.integers(0, photo.shape[1] - crop + 1)
        im = Image.fromarray(photo[y : y + crop, x : x + crop]).resize((size, size))
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def make_setup(
    root: Path, *, rows: int, size: int, width: int, blocks: int, row_group: int = 32, decode: bool = True
) -> ScoringSetup:
    """A bundle with a ResNet (random weights: speed does not depend on them) and a Delta table to score;
    `decode=False` skips decoding every row into memory (only the bare baselines need it)."""
    from deltalake import WriterProperties, write_deltalake

    root.mkdir(parents=True, exist_ok=True)
    table = root / f"images_{rows}_{size}"
    if not table.exists():
        blobs = _jpegs(rows, size, seed=0)
        data = pa.table(
            {
                "key": [f"img-{i:06d}" for i in range(rows)],
                "image": pa.array(blobs, pa.binary()),
                "label": [str(i % 10) for i in range(rows)],
            }
        )
        write_deltalake(str(table), data, writer_properties=WriterProperties(max_row_group_size=row_group))
    pre = Preprocessor(
        key="key",
        numeric=[],
        categories=[],
        image=ImageState("image", "image", size, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        label=LabelState("label", "classification", classes=[str(i) for i in range(10)]),
    )
    spec = ModelSpec("resnet", 10, image_channels=3, image_size=size, width=width, depth=4, options={"blocks": blocks})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    bundle_dir = Bundle(spec, pre, model.state_dict()).save(root / f"bundle_{size}_{width}_{blocks}")
    from deltalake import DeltaTable

    images = DeltaTable(str(table)).to_pyarrow_table(columns=["key", "image"])
    if not decode:
        images = images.slice(0, 2)
    decoded = pre.encode(images, with_label=False).inputs["image"]
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model({"image": torch.from_numpy(decoded[:2])})
    return ScoringSetup(root, table, bundle_dir, rows, size, spec, decoded, counter.get_total_flops() / 2)


def bare_torch(setup: ScoringSetup, *, threads: int, batch: int | None = None) -> tuple[float, float]:
    """Rows/s of the bare model on decoded tensors (channels_last, inference mode), and wall seconds; by
    default in the Predictor's own forward chunks (same batch size on both sides)."""
    batch = batch or setup.chunk
    torch.set_num_threads(threads)
    model = Bundle.load(setup.bundle_dir).build().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.from_numpy(setup.decoded)
    with torch.inference_mode():
        model({"image": x[:batch].contiguous(memory_format=torch.channels_last)})  # warm-up
        t0 = time.perf_counter()
        for s in range(0, len(x), batch):
            model({"image": x[s : s + batch].contiguous(memory_format=torch.channels_last)})
        dt = time.perf_counter() - t0
    return len(x) / dt, dt


class _OnnxImage(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model({"image": image})


def bare_ort(setup: ScoringSetup, *, threads: int, batch: int | None = None) -> tuple[float, float] | None:
    """Rows/s of the same model in ONNX Runtime on the same tensors (in the Predictor's forward chunks); None if
    onnxruntime is not installed."""
    batch = batch or setup.chunk
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = setup.root / f"model_{setup.size}_{setup.spec.width}.onnx"
    if not path.exists():
        model = Bundle.load(setup.bundle_dir).build()
        torch.onnx.export(
            _OnnxImage(model).eval(),
            (torch.from_numpy(setup.decoded[:1]),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}},
            dynamo=False,
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = setup.decoded
    sess.run(None, {"image": x[:batch]})
    t0 = time.perf_counter()
    for s in range(0, len(x), batch):
        sess.run(None, {"image": x[s : s + batch]})
    dt = time.perf_counter() - t0
    return len(x) / dt, dt


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ---- the bare model as P processes x 1 thread ----------------------------------------------------------------
_BARE: dict[str, Any] = {}  # in each pool process: the model / session and its share of the tensors


def _bare_init(kind: str, bundle_dir: str, onnx_path: str, decoded_path: str, batch: int) -> None:
    torch.set_num_threads(1)
    x = np.load(decoded_path, mmap_mode="r")
    _BARE["x"], _BARE["batch"], _BARE["kind"] = x, batch, kind
    if kind == "torch":
        _BARE["model"] = Bundle.load(bundle_dir).build().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        _BARE["sess"] = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    _bare_run(0, min(batch, len(x)), 0.0)  # warm-up, before any timing


def _bare_run(start: int, stop: int, go: float) -> tuple[float, float]:
    """Score rows [start, stop) in the Predictor's chunks after waiting for the common start time `go`;
    returns (start, end) wall-clock times."""
    x, batch = _BARE["x"], _BARE["batch"]
    while time.time() < go:
        time.sleep(0.0005)
    t0 = time.time()
    with torch.inference_mode():
        for s in range(start, stop, batch):
            chunk = np.ascontiguousarray(x[s : min(s + batch, stop)])
            if _BARE["kind"] == "torch":
                _BARE["model"]({"image": torch.from_numpy(chunk).contiguous(memory_format=torch.channels_last)})
            else:
                _BARE["sess"].run(None, {"image": chunk})
    return t0, time.time()


class BarePool:
    """The bare model in `procs` processes of 1 thread each, every one scoring an equal share of the same
    decoded tensors at once: the other way to spend `procs` cores (on small CPUs it can beat 1 process x `procs`
    threads). Processes start (and load the model, and run one warm-up chunk) before any timing; rows/s is all
    rows / (last finish - first start)."""

    def __init__(self, setup: ScoringSetup, kind: str, procs: int) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.setup, self.procs = setup, procs
        decoded = setup.root / f"decoded_{setup.rows}_{setup.size}.npy"
        np.save(decoded, setup.decoded)
        onnx_path = str(setup.root / f"model_{setup.size}_{setup.spec.width}.onnx")
        if kind == "ort":
            bare_ort(setup, threads=1)  # exports the model once
        self.pool = ProcessPoolExecutor(
            procs,
            mp_context=mp.get_context("spawn"),
            initializer=_bare_init,
            initargs=(kind, str(setup.bundle_dir), onnx_path, str(decoded), setup.chunk),
        )
        self.rate()  # every process started, loaded and warmed up

    def rate(self) -> tuple[float, float]:
        n = len(self.setup.decoded)
        cuts = [n * i // self.procs for i in range(self.procs + 1)]
        go = time.time() + 0.2  # every process has picked up its share before the clock starts
        futs = [self.pool.submit(_bare_run, cuts[i], cuts[i + 1], go) for i in range(self.procs)]
        spans = [f.result() for f in futs]
        wall = max(e for _, e in spans) - min(s for s, _ in spans)
        return n / wall, wall

    def close(self) -> None:
        self.pool.shutdown()
