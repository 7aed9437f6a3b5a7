"""Shared benchmark plumbing: interleaved pairs, ratio statistics, CPU time, machine/versions, JSON results,
a cached digits Delta table, lakenet runs with an epoch clock, and the plain PyTorch reference loop.

Conventions (see /work/shared/BENCHMARKS.md):
- every figure is a ratio against a baseline measured in the same run, over interleaved pairs (the order
  alternates A B, B A, ... so that a drift in machine speed does not favour one side), reported as the median of
  the per-pair ratios with the min–max;
- CPU seconds come from `resource.getrusage` (self + waited-for children), so DDP worker processes count;
- fixed costs (scan, process spawn, process-group setup, first batch) are reported apart from steady state.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from lakenet.config import parse_config
from lakenet.config.schema import Config
from lakenet.data.encoders import Preprocessor
from lakenet.data.scan import ScanResult, scan_table
from lakenet.data.sources import Snapshot, open_table
from lakenet.data.split import TRAIN, assign_splits
from lakenet.engines.local import LocalEngine, cpu_count
from lakenet.models.registry import build_model, config_trust, model_spec
from lakenet.models.spec import ModelSpec
from lakenet.training.callbacks import Callback
from lakenet.training.loop import TrainJob

__all__ = [
    "CORES",
    "RESULTS_DIR",
    "EpochClock",
    "EpochStat",
    "LakenetRun",
    "LinearNet",
    "PlainLoop",
    "Prepared",
    "base_parser",
    "bench_config",
    "cpu_seconds",
    "digits_table",
    "flops_per_sample",
    "fmt_range",
    "interleave",
    "machine_busy_s",
    "machine_info",
    "manual_seed_us",
    "pick_device",
    "prepare",
    "print_table",
    "quiet_summary",
    "run_lakenet",
    "scaled",
    "summary",
    "train_tensors",
    "versions",
    "write_result",
]

CORES = cpu_count()
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
U = TypeVar("U")


# ---- measuring ---------------------------------------------------------------------------------------------
def cpu_seconds(*, children: bool = True) -> float:
    """User + system CPU seconds of this process (all its threads) plus, by default, its waited-for children."""
    who = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if children else [])
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(w) for w in who))


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, plus time the hypervisor stole), from
    /proc/stat; minus our own CPU seconds it tells whether something else was running during a measurement."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds() -> float:
    """CPU seconds of this process and every live descendant (pool workers under a fork server, Spark's JVM and
    its Python workers), each with its own waited-for children: what our side used, whoever ran it."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:  # gone meanwhile
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


QUIET_CORES = 0.1  # a pair is "quiet" when nothing else used more than this many cores during any of its parts


def quiet_summary(pairs: Sequence[dict[str, Any]], key: str) -> dict[str, float] | None:
    """The summary of `key` over the quiet pairs only (a diagnostic next to the all-pairs headline)."""
    vals = [p[key] for p in pairs if p["foreign_cores"] <= QUIET_CORES]
    return {**summary(vals), "of": len(pairs)} if vals else None


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max (and count) of per-pair figures."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt_range(s: dict[str, float], digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def scaled(s: dict[str, float], k: float) -> dict[str, float]:
    """A summary with median/min/max multiplied by k (unit changes)."""
    return {**s, "median": s["median"] * k, "min": s["min"] * k, "max": s["max"] * k}


def interleave(
    pairs: int, run_a: Callable[[], T], run_b: Callable[[], U], *, log: Callable[[str], None] | None = None
) -> list[tuple[T, U]]:
    """Run A and B `pairs` times each, alternating the order within a pair (A B, B A, A B, ...)."""
    out: list[tuple[T, U]] = []
    for i in range(pairs):
        if i % 2 == 0:
            a = run_a()
            b = run_b()
        else:
            b = run_b()
            a = run_a()
        out.append((a, b))
        if log is not None:
            log(f"  pair {i + 1}/{pairs} done")
    return out


# ---- machine and results -----------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, Any]:
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cores_usable": CORES,
        "cpu_model": _cpu_model(),
        "mem_gib": mem_gib,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_end": list(os.getloadavg()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def versions() -> dict[str, Any]:
    import deltalake
    import PIL
    import pyarrow

    import lakenet

    dirty = _git("status", "--porcelain", "--", "src")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lakenet": lakenet.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "deltalake": deltalake.__version__,
        "pillow": PIL.__version__,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "src_dirty": bool(dirty) if dirty is not None else None,
    }


def write_result(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    """Write the JSON result; full runs go to bench/results/<name>.json, --quick runs to a temp dir."""
    if args.out:
        path = Path(args.out)
    elif args.quick:
        path = Path(tempfile.gettempdir()) / "lakenet-bench" / "results" / f"{name}.quick.json"
    else:
        path = RESULTS_DIR / f"{name}.json"
    doc = {
        "benchmark": name,
        "quick": bool(args.quick),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", f"bench.{name}", *sys.argv[1:]]),
        "machine": machine_info(),
        "versions": versions(),
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


# ---- command line ------------------------------------------------------------------------------------------
def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    p.add_argument("--quick", action="store_true", help="tiny model, 3 pairs: finishes in < 1 minute (CI smoke)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda falls back to cpu if absent")
    p.add_argument("--threads", type=int, default=CORES, help=f"torch threads per process budget (default {CORES})")
    p.add_argument("--out", default=None, help="JSON result path (default bench/results/<name>.json)")
    p.add_argument("--cache-dir", default=None, help="where the digits Delta table is cached (default: temp dir)")
    return p


def pick_device(wanted: str) -> tuple[str, str | None]:
    """The device to run on, and a note when the wanted one is not available."""
    if wanted == "cuda" and not torch.cuda.is_available():
        note = (
            f"--device cuda requested, but torch {torch.__version__} sees no CUDA device "
            "(torch.cuda.is_available() is False); falling back to cpu"
        )
        print(f"NOTE: {note}", file=sys.stderr, flush=True)
        return "cpu", note
    return wanted, None


# ---- data ----------------------------------------------------------------------------------------------------
def cache_root(cache_dir: str | Path | None = None) -> Path:
    root = cache_dir or os.environ.get("LAKENET_BENCH_CACHE") or Path(tempfile.gettempdir()) / "lakenet-bench"
    return Path(root)


def digits_table(cache_dir: str | Path | None = None, *, limit: int | None = None) -> Path:
    """scikit-learn's digits (1797 8×8 PNGs, no corrupt files) as a Delta table, built once and cached.

    A file lock makes concurrent benchmark processes build it once; a READY marker makes a half-built one
    (interrupted run) be rebuilt.
    """
    from lakenet.data.ingest import ingest
    from lakenet.demo import write_digits_folder

    root = cache_root(cache_dir)
    name = f"digits-{limit or 'all'}-v1"
    work = root / name
    table, ready = work / "table", work / "READY"
    if ready.is_file():
        return table
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.is_file():
            shutil.rmtree(work, ignore_errors=True)
            n = write_digits_folder(work / "images", limit=limit, corrupt=0)
            ingest(work / "images", table, mode="overwrite")
            shutil.rmtree(work / "images", ignore_errors=True)
            ready.write_text(f"{n} rows\n")
    return table


def bench_config(
    table: Path,
    *,
    size: int,
    width: int,
    depth: int = 2,
    blocks: int = 1,
    batch_size: int = 64,
    epochs: int = 3,
    learning_rate: float = 0.003,
    device: str = "cpu",
    cache_mb: int = 2048,
    seed: int = 0,
    module: str | None = None,
) -> dict[str, Any]:
    """A digits config with no validation split (nothing but training in the timed part) and checkpoints only
    at epoch end (lakenet's default cadence for a run this short would be the same)."""
    return {
        "data": {
            "table": str(table),
            "split": {"train": 0.9, "val": 0.0, "test": 0.1},
            "max_bad_fraction": 0.05,
            "cache_mb": cache_mb,
        },
        "features": {"label": {"column": "label"}, "image": {"type": "image", "size": size, "channels": 1}},
        "model": {
            "architecture": "auto" if module else "resnet",
            "module": module,
            "width": width,
            "depth": depth,
            "dropout": 0.1,
            "options": {"blocks": blocks},
        },
        "trainer": {
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "optimizer": "adamw",
            "grad_clip": 1.0,
            "early_stopping": None,
            "checkpoint_every_steps": 0,
            "seed": seed,
            "device": device,
        },
        "registry": {"name": "bench"},
    }


@dataclass
class Prepared:
    """A config turned into a TrainJob template (output dirs are filled in per run), with its fixed costs."""

    cfg: Config
    snap: Snapshot
    scan: ScanResult
    spec: ModelSpec
    job: TrainJob
    open_s: float
    scan_s: float

    @property
    def pre(self) -> Preprocessor:
        return self.scan.preprocessor

    @property
    def train_rows(self) -> int:
        return int(self.scan.fragment_counts[:, TRAIN].sum())


def prepare(raw: dict[str, Any], *, min_fragments: int) -> Prepared:
    """open_table → subdivided → scan_table (the profile pass) → model spec → TrainJob, timing the two passes."""
    cfg = parse_config(raw)
    t0 = time.perf_counter()
    snap = open_table(cfg.data.table).subdivided(min_fragments)
    t1 = time.perf_counter()
    res = scan_table(cfg, snap)
    t2 = time.perf_counter()
    spec = model_spec(cfg, res.preprocessor)
    job = TrainJob(
        config=cfg,
        snapshot=snap,
        preprocessor=res.preprocessor,
        spec=spec,
        fragment_counts=res.fragment_counts,
        output_dir="",
        checkpoint_dir="",
    )
    return Prepared(cfg, snap, res, spec, job, t1 - t0, t2 - t1)


def train_tensors(prep: Prepared) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The training rows decoded with the same Preprocessor.encode the loader uses, as contiguous tensors."""
    pre = prep.pre
    cols = pre.columns(with_label=True)
    inputs: dict[str, list[np.ndarray]] = {}
    targets: list[np.ndarray] = []
    for frag in prep.snap.fragments:
        table = prep.snap.read(frag, cols)
        keep = assign_splits(table.column(pre.key), prep.cfg.data.split) == TRAIN
        enc = pre.encode(table.filter(keep), with_label=True)
        assert enc.target is not None
        for k, v in enc.inputs.items():
            inputs.setdefault(k, []).append(v)
        targets.append(enc.target)
    x = {k: torch.from_numpy(np.ascontiguousarray(np.concatenate(v))) for k, v in inputs.items()}
    y = torch.from_numpy(np.ascontiguousarray(np.concatenate(targets)))
    if len(y) != prep.train_rows:
        raise RuntimeError(f"decoded {len(y)} training rows, scan counted {prep.train_rows}")
    return x, y


def flops_per_sample(spec: ModelSpec, inputs: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, float]:
    """Forward and forward+backward FLOPs per sample (torch.utils.flop_counter), on a batch of the inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_model(spec, trusted=(spec.architecture,)).train()  # the benchmark's own modules
    n = min(32, len(target))
    xb = {k: v[:n] for k, v in inputs.items()}
    with FlopCounterMode(display=False) as fwd:
        out = model(xb)
    with FlopCounterMode(display=False) as both:
        out = model(xb)
        nn.functional.cross_entropy(out, target[:n]).backward()
    return {"forward": fwd.get_total_flops() / n, "train_step": both.get_total_flops() / n}


class LinearNet(nn.Module):
    """A near-free model (one Linear layer on the flattened image): with it, a training step costs little more
    than the framework around it, so lakenet's per-step overhead shows in microseconds.
    Used as `model.module: bench._common:LinearNet`."""

    def __init__(self, spec: ModelSpec, **options: Any) -> None:
        super().__init__()
        self.lin = nn.Linear(spec.image_channels * spec.image_size**2, spec.num_outputs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.lin(inputs["image"].flatten(1))


def manual_seed_us(number: int = 200) -> float:
    """Microseconds per torch.manual_seed call here (lakenet's loop calls it once per step), for context."""
    t0 = time.perf_counter()
    for i in range(number):
        torch.manual_seed(i)
    return (time.perf_counter() - t0) / number * 1e6


# ---- the plain PyTorch reference loop ------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochStat:
    rows: int
    wall: float
    cpu: float  # this process's CPU seconds (all threads)
    busy: float  # the whole machine's busy CPU seconds (incl. hypervisor steal) over the same span
    loss: float = float("nan")

    @property
    def foreign_cores(self) -> float:
        """Average cores used by anything else on the machine meanwhile (another job, the hypervisor)."""
        return max(0.0, self.busy - self.cpu) / self.wall


class PlainLoop:
    """What a user would write by hand, advanced one epoch at a time (so that its epochs can be interleaved
    with lakenet's): same model and seed, AdamW with the same two parameter groups (no decay on biases/norms),
    the same cosine LambdaLR, cross-entropy, clip_grad_norm_ every step, shuffled mini-batches gathered from
    tensors already in memory (copied to the device per batch, as lakenet does)."""

    def __init__(
        self,
        prep: Prepared,
        inputs: dict[str, torch.Tensor],
        target: torch.Tensor,
        *,
        total_epochs: int,
        device: str = "cpu",
    ) -> None:
        t = prep.cfg.trainer
        self.dev = torch.device("cuda:0" if device == "cuda" else "cpu")
        torch.manual_seed(t.seed)
        self.model = build_model(prep.spec, trusted=config_trust(prep.cfg)).to(self.dev)
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.learning_rate,
        )
        self.inputs, self.target = inputs, target
        self.n, self.bs = len(target), t.batch_size
        total = max(1, total_epochs * ((self.n + self.bs - 1) // self.bs))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.params = list(self.model.parameters())
        self.clip = t.grad_clip if t.grad_clip is not None else float("inf")
        self.gen = torch.Generator().manual_seed(t.seed)

    def epoch(self) -> EpochStat:
        dev, model, optimizer = self.dev, self.model, self.optimizer
        w0, c0, m0 = time.perf_counter(), cpu_seconds(children=False), machine_busy_s()
        model.train()
        perm = torch.randperm(self.n, generator=self.gen)
        loss_sum = 0.0
        for i in range(0, self.n, self.bs):
            idx = perm[i : i + self.bs]
            xb = {k: v[idx].to(dev, non_blocking=True) for k, v in self.inputs.items()}
            yb = self.target[idx].to(dev, non_blocking=True)
            out = model(xb)
            loss = self.loss_fn(out, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            optimizer.step()
            self.scheduler.step()
            loss_sum += loss.item() * len(yb)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - w0, cpu_seconds(children=False) - c0
        return EpochStat(self.n, wall, cpu, machine_busy_s() - m0, loss_sum / self.n)


# ---- lakenet runs ----------------------------------------------------------------------------------------------
class EpochClock(Callback):
    """Marks (monotonic time, this process's CPU seconds) at train start, first step, every epoch end and train
    end, and writes them to a JSON file at train end (so it also works on rank 0 of spawned DDP workers).
    time.monotonic is CLOCK_MONOTONIC, comparable across processes on one machine.

    In-process only: `between` (e.g. one plain-loop epoch) runs `before` times at train start and once after
    every lakenet epoch, outside lakenet's timed epochs (a "resume" mark follows it). That interleaves the two
    sides epoch by epoch, A B A B ..., which cancels the machine's swings far better than whole runs."""

    def __init__(self, path: str, between: Callable[[], EpochStat] | None = None, before: int = 0) -> None:
        self.path = path
        self.marks: list[dict[str, Any]] = []
        self.between = between
        self.before = before
        self.pre_stats: list[EpochStat] = []
        self.between_stats: list[EpochStat] = []
        self._stepped = False

    def __getstate__(self) -> dict[str, Any]:
        if self.between is not None:
            raise TypeError("an EpochClock with `between` runs in-process only (workers=1)")
        return self.__dict__

    def _mark(self, event: str, state: Any) -> None:
        self.marks.append(
            {
                "event": event,
                "epoch": state.epoch,
                "step": state.step,
                "t": time.monotonic(),
                "cpu": cpu_seconds(children=False),
                "busy": machine_busy_s(),
            }
        )

    def on_train_start(self, state: Any, logs: dict[str, Any]) -> None:
        self._mark("called", state)
        if self.between is not None:
            self.pre_stats = [self.between() for _ in range(self.before)]
        self._mark("start", state)

    def on_step_end(self, state: Any, logs: dict[str, Any]) -> None:
        if not self._stepped:
            self._stepped = True
            self._mark("first_step", state)

    def on_epoch_end(self, state: Any, logs: dict[str, Any]) -> None:
        self._mark("epoch_end", state)
        if self.between is not None:
            self.between_stats.append(self.between())
        self._mark("resume", state)

    def on_train_end(self, state: Any, logs: dict[str, Any]) -> None:
        self._mark("end", state)
        Path(self.path).write_text(json.dumps(self.marks))


@dataclass
class LakenetRun:
    """One lakenet training run, timed from outside (the call) and inside (rank 0's epoch clock)."""

    workers: int
    call_s: float  # the whole engine.train call (includes any interleaved plain-loop epochs)
    cpu_total_s: float  # self + children over the call
    rows_seen: int
    epochs: int
    history: list[dict[str, float]]
    marks: list[dict[str, Any]]
    t_call: float  # monotonic time of the call
    t_return: float
    pre_stats: list[EpochStat] = field(default_factory=list)
    between_stats: list[EpochStat] = field(default_factory=list)

    def _at(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.marks if m["event"] == event]

    @property
    def rows_per_epoch(self) -> float:
        return self.rows_seen / self.epochs

    @property
    def setup_s(self) -> float:
        """From the engine call to the loop's start on rank 0 (spawn, imports, process group, model, loader)."""
        return self._at("called")[0]["t"] - self.t_call

    @property
    def teardown_s(self) -> float:
        """From the loop's end on rank 0 to the engine call returning (weights/result writing, process joins)."""
        return self.t_return - self._at("end")[0]["t"]

    @property
    def first_step_s(self) -> float:
        return self._at("first_step")[0]["t"] - self._at("start")[0]["t"]

    def _per_epoch(self, key: str) -> list[float]:
        starts = [self._at("start")[0][key]] + [m[key] for m in self._at("resume")]
        ends = [m[key] for m in self._at("epoch_end")]
        return [e - s for s, e in zip(starts, ends, strict=False)]

    @property
    def epoch_wall(self) -> list[float]:
        """Per-epoch wall seconds, loop start / previous epoch's end (after any interleaved work) to epoch end:
        includes lakenet's epoch-end work (loss all-reduce, validation, checkpoint)."""
        return self._per_epoch("t")

    @property
    def epoch_cpu(self) -> list[float]:
        """Rank 0's CPU seconds per epoch, × workers (all ranks do the same work)."""
        return [c * self.workers for c in self._per_epoch("cpu")]

    @property
    def epoch_foreign_cores(self) -> list[float]:
        """Cores used by anything else on the machine during each epoch (other ranks counted as ours)."""
        busy = self._per_epoch("busy")
        return [max(0.0, b - c) / w for b, c, w in zip(busy, self.epoch_cpu, self.epoch_wall, strict=True)]

    @property
    def loop_rows_per_s(self) -> list[float]:
        """lakenet's own per-epoch rows/s (training steps only: no validation, no checkpoint)."""
        return [h["rows_per_s"] for h in self.history]

    def steady(self, first: int = 1) -> dict[str, float]:
        """Epochs `first`.. (0-based): seconds and CPU seconds per sample, epoch-clock and loop-only."""
        walls, cpus = self.epoch_wall[first:], self.epoch_cpu[first:]
        rows = self.rows_per_epoch * len(walls)
        loop = self.loop_rows_per_s[first:]
        return {
            "s_per_sample": sum(walls) / rows,
            "cpu_per_sample": sum(cpus) / rows,
            "loop_s_per_sample": sum(1.0 / r for r in loop) / len(loop),
            "foreign_cores": max(self.epoch_foreign_cores[first:]),
        }

    def epoch_pairs(self) -> list[dict[str, float]]:
        """Per lakenet epoch k (0-based), its figures per sample next to the plain loop's, the plain side being
        the mean of the plain epochs run just before and just after it (a sandwich: cancels linear drift)."""
        if not self.between_stats or not self.pre_stats:
            raise ValueError("epoch_pairs needs a run with interleaved plain-loop epochs (before ≥ 1)")
        plain = [self.pre_stats[-1], *self.between_stats]
        rows = self.rows_per_epoch
        out = []
        for k, (wall, cpu, loop_rps, foreign) in enumerate(
            zip(self.epoch_wall, self.epoch_cpu, self.loop_rows_per_s, self.epoch_foreign_cores, strict=True)
        ):
            b0, b1 = plain[k], plain[k + 1]
            b_wall = (b0.wall / b0.rows + b1.wall / b1.rows) / 2
            b_cpu = (b0.cpu / b0.rows + b1.cpu / b1.rows) / 2
            out.append(
                {
                    "epoch": k + 1,
                    "lakenet_s_per_sample": wall / rows,
                    "lakenet_loop_s_per_sample": 1.0 / loop_rps,
                    "lakenet_cpu_per_sample": cpu / rows,
                    "plain_s_per_sample": b_wall,
                    "plain_cpu_per_sample": b_cpu,
                    "ratio_time": (wall / rows) / b_wall,
                    "ratio_loop_only": (1.0 / loop_rps) / b_wall,
                    "ratio_cpu": (cpu / rows) / b_cpu,
                    "foreign_cores": max(foreign, b0.foreign_cores, b1.foreign_cores),
                }
            )
        return out


def run_lakenet(
    prep: Prepared,
    *,
    workers: int,
    device: str,
    workdir: Path,
    between: Callable[[], EpochStat] | None = None,
    before: int = 0,
) -> LakenetRun:
    """Train once through LocalEngine (in-process for one worker, spawned DDP processes for several);
    `between`/`before`: see EpochClock."""
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    try:
        job = dataclasses.replace(prep.job, output_dir=str(run_dir / "out"), checkpoint_dir=str(run_dir / "ckpt"))
        clock = EpochClock(str(run_dir / "marks.json"), between=between, before=before)
        c0 = cpu_seconds()
        t0 = time.monotonic()
        LocalEngine().train(job, workers=workers, device=device, callbacks=[clock])
        t1 = time.monotonic()
        c1 = cpu_seconds()
        marks = json.loads((run_dir / "marks.json").read_text())
        result = json.loads((run_dir / "out" / "result.json").read_text())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return LakenetRun(
        workers=workers,
        call_s=t1 - t0,
        cpu_total_s=c1 - c0,
        rows_seen=int(result["rows_seen"]),
        epochs=len(result["history"]),
        history=result["history"],
        marks=marks,
        t_call=t0,
        t_return=t1,
        pre_stats=clock.pre_stats,
        between_stats=clock.between_stats,
    )
