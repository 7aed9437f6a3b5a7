"""The per-worker training loop, plain PyTorch. It does not know who launched it (a thread, a local process,
a Spark task): the engine sets up torch.distributed (or not) and calls `train_worker` with a TrainJob.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from lakenet.config.loader import parse_config
from lakenet.config.schema import Config
from lakenet.data.encoders import Preprocessor
from lakenet.data.loader import SplitLoader, plan_shards
from lakenet.data.sources import Snapshot
from lakenet.data.split import TRAIN, VAL
from lakenet.errors import TrainingError
from lakenet.evaluation.metrics import (
    BinaryScores,
    classification_metrics,
    confusion_matrix,
    metric_mode,
    regression_metrics_from_sums,
    regression_sums,
)
from lakenet.models.registry import build_model, config_trust
from lakenet.models.spec import ModelSpec
from lakenet.training.callbacks import Callback
from lakenet.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from lakenet.training.transfer import apply_pretrained, frozen_subtrees

__all__ = ["TrainJob", "TrainState", "WorkerContext", "resolve_device", "train_worker"]


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, picklable, so a local process or a Spark task can run it unchanged."""

    config: dict[str, Any]
    snapshot: Snapshot
    preprocessor: dict[str, Any]
    spec: dict[str, Any]
    fragment_counts: np.ndarray  # (fragments, 3) usable rows per split
    output_dir: str  # rank 0 writes result.json and weights.safetensors here
    checkpoint_dir: str
    resume: bool = False
    # Train on train+validation with no validation pass (a tuned configuration's final fit); the config's
    # epochs are the budget and early stopping must be off.
    refit: bool = False
    # Transfer learning: pretrained tensors to start from (a safetensors file), parameters kept frozen, and
    # parameters with their own learning rate.
    init_weights: str | None = None
    frozen: tuple[str, ...] = ()
    param_lrs: dict[str, float] = field(default_factory=dict)
    # Decided on the driver from the training split (see training.plan): the early-stopping metric (auto
    # resolved), the epochs always trained, and the classes' weights in the loss (None: unweighted).
    watch: str | None = None
    min_epochs: int = 1
    class_weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"


@dataclass
class TrainState:
    """Loop position and early-stopping state; saved in every checkpoint."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    nonfinite_steps: int = 0
    nonfinite_run: int = 0
    stopped_early: bool = False
    resumed_from_step: int | None = None  # set when this run continued from a checkpoint
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(wanted: str) -> str:
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise TrainingError("trainer.device is 'cuda' but no CUDA device is available; set trainer.device: cpu")
    return wanted


def _lr_lambda(cfg: Config, steps_per_epoch: int) -> Any:
    t = cfg.trainer
    total = max(1, t.epochs * steps_per_epoch)
    if t.schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if t.schedule == "step":
        return lambda step: t.gamma ** ((step // steps_per_epoch) // t.step_epochs)
    return lambda step: 1.0


def _optimizer(cfg: Config, model: nn.Module, lrs: dict[str, float] | None = None) -> torch.optim.Optimizer:
    t = cfg.trainer
    lrs = lrs or {}
    # No weight decay on biases and normalisation parameters (the usual practice; it hurts small nets otherwise).
    # Frozen parameters are left out; a pretrained backbone may have its own learning rate.
    by_group: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (lrs.get(name, t.learning_rate), t.weight_decay if p.ndim > 1 else 0.0)
            by_group.setdefault(key, []).append(p)
    groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in by_group.items()]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.learning_rate, momentum=t.momentum)
    return torch.optim.AdamW(groups, lr=t.learning_rate)


def _ddp_no_buffer_sync() -> dict[str, Any]:
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _step_seed(seed: int, rank: int, step: int) -> int:
    # Dropout randomness is a pure function of (seed, rank, step): a resumed run replays it exactly without
    # having to save every rank's generator state.
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


class _Evaluator:
    """Validation figures summed over workers (confusion matrix / regression sums), then turned into metrics."""

    def __init__(self, pre: Preprocessor, device: torch.device) -> None:
        self.pre, self.device = pre, device
        self.classification = pre.label.task == "classification"

    @torch.no_grad()
    def run(self, model: nn.Module, loader: SplitLoader | None, loss_fn: nn.Module) -> dict[str, float]:
        if dist.is_initialized():
            # Each rank updated its BatchNorm statistics with its own last batch: evaluate rank 0's everywhere.
            for buf in model.buffers():
                if buf.is_floating_point():  # not counters, nor a frozen ONNX graph's bytes
                    dist.broadcast(buf, 0)
        model.eval()
        k = self.pre.num_outputs
        cm = np.zeros((k, k), dtype=np.int64)
        sums = np.zeros(5)
        loss_sum, n = 0.0, 0
        label = self.pre.label
        positive = (label.classes or []).index(label.positive) if label.positive in (label.classes or []) else None
        scores = BinaryScores()
        for batch in loader.batches(0) if loader is not None else []:
            b = batch.to(self.device)
            out = model(b.inputs)
            loss_sum += float(loss_fn(out, b.target if self.classification else b.target.view(-1, 1))) * len(b)
            n += len(b)
            if self.classification:
                pred = out.argmax(1).cpu().numpy()
                truth = b.target.cpu().numpy()
                cm += confusion_matrix(truth, pred, k)
                if positive is not None:
                    scores.update(truth == positive, torch.softmax(out.float(), 1)[:, positive].cpu().numpy())
            else:
                y = self.pre.decode_target(b.target.cpu().numpy().astype(np.float64))
                yhat = self.pre.decode_target(out.view(-1).cpu().numpy().astype(np.float64))
                sums += regression_sums(y, yhat)
        flat = np.concatenate([[loss_sum, n], cm.ravel().astype(np.float64), sums, scores.counts.ravel()])
        if dist.is_initialized():
            t = torch.from_numpy(flat).to(self.device)
            dist.all_reduce(t)
            flat = t.cpu().numpy()
        loss_sum, n = float(flat[0]), int(flat[1])
        if n == 0:
            return {}
        metrics = {"val_loss": loss_sum / n}
        if self.classification:
            cm = flat[2 : 2 + k * k].reshape(k, k).astype(np.int64)
            metrics.update(classification_metrics(cm, self.pre.label.classes or [], prefix="val"))
            if positive is not None:
                merged = BinaryScores(flat[2 + k * k + 5 :])
                for name, value in (("val_roc_auc", merged.roc_auc()), ("val_pr_auc", merged.average_precision())):
                    if value is not None:
                        metrics[name] = value
        else:
            metrics.update(regression_metrics_from_sums(flat[2 + k * k : 2 + k * k + 5], prefix="val"))
        return metrics


def _all_reduce_mean(value: float, count: int, device: torch.device) -> float:
    if not dist.is_initialized():
        return value / max(count, 1)
    t = torch.tensor([value, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0] / t[1].clamp(min=1))


def train_worker(job: TrainJob, ctx: WorkerContext, callbacks: Sequence[Callback] = ()) -> TrainState:
    """Train on this worker's shard; rank 0 checkpoints, calls callbacks and writes the result."""
    cfg = parse_config(job.config)
    t = cfg.trainer
    rank, world = ctx.rank, ctx.world_size
    device = torch.device(ctx.device)
    lead = rank == 0
    callbacks = list(callbacks) if lead else []
    pre = Preprocessor.from_dict(job.preprocessor)
    spec = ModelSpec.from_dict(job.spec)
    classification = pre.label.task == "classification"

    torch.manual_seed(t.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(spec, trusted=config_trust(cfg))
    init = load_file(job.init_weights) if job.init_weights and not job.resume else None
    apply_pretrained(model, init, job.frozen)
    del init
    model = model.to(device)
    frozen_modules = frozen_subtrees(model)
    counts = job.fragment_counts
    train_splits: int | tuple[int, int] = (TRAIN, VAL) if job.refit else TRAIN
    train_counts = counts[:, TRAIN] + counts[:, VAL] if job.refit else counts[:, TRAIN]
    train_shards = plan_shards(train_counts, world)
    val_shards = plan_shards(counts[:, VAL], world)
    per_rank_batch = max(1, t.batch_size // world)
    loader = SplitLoader(
        job.snapshot, pre, split=train_splits, split_cfg=cfg.data.split, fragments=train_shards[rank],
        batch_size=per_rank_batch, shuffle=True, seed=t.seed, cache_mb=cfg.data.cache_mb,
    )  # fmt: skip
    val_loader = (
        SplitLoader(
            job.snapshot,
            pre,
            split=VAL,
            split_cfg=cfg.data.split,
            fragments=val_shards[rank],
            batch_size=max(256, per_rank_batch),
            shuffle=False,
            seed=t.seed,
            cache_mb=cfg.data.cache_mb,
        )
        if cfg.data.split.val > 0 and not job.refit
        else None
    )
    if job.refit and t.early_stopping is not None:
        raise TrainingError("a refit on train+validation has no validation split to stop on: disable early stopping")
    rows_per_rank = [int(train_counts[s].sum()) for s in train_shards]
    # Every rank must take the same number of steps (DDP all-reduces each one): the smallest shard decides.
    steps_per_epoch = min((r + per_rank_batch - 1) // per_rank_batch for r in rows_per_rank)
    if steps_per_epoch == 0:
        raise TrainingError(
            f"The training split has too few usable rows for {world} worker(s) ({rows_per_rank}); "
            "add rows, lower engine.workers, or raise data.split.train."
        )

    optimizer = _optimizer(cfg, model, job.param_lrs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))
    state = TrainState()
    best_weights: dict[str, torch.Tensor] | None = None
    if job.resume:
        ckpt = latest_checkpoint(job.checkpoint_dir)
        if ckpt is None:
            raise TrainingError(
                f"--resume: no complete checkpoint in {job.checkpoint_dir}; train without --resume to start over"
            )
        weights, best_weights, saved = load_checkpoint(ckpt)
        model.load_state_dict(weights)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState(**saved["train_state"])
        state.resumed_from_step = state.step

    net: nn.Module = model
    if world > 1:
        # No buffer sync before every forward: rank 0's BatchNorm statistics are broadcast before validation and
        # only rank 0's are saved, so the per-step sync bought nothing but a collective (bench/ddp_local).
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **_ddp_no_buffer_sync()
        )
    weight = torch.tensor(job.class_weights, dtype=torch.float32, device=device) if job.class_weights else None
    loss_fn: nn.Module = nn.CrossEntropyLoss(weight=weight) if classification else nn.MSELoss()
    evaluator = _Evaluator(pre, device)
    es = t.early_stopping
    # job.watch: "auto" resolved by the driver from the training split; a hand-made job falls back to val_loss
    watch = (job.watch or (es.metric if es.metric != "auto" else "val_loss")) if es else None
    mode = metric_mode(watch) if watch else "min"
    params = [p for p in model.parameters() if p.requires_grad]
    clip = t.grad_clip if t.grad_clip is not None else float("inf")
    logs: dict[str, Any] = {"steps_per_epoch": steps_per_epoch, "epochs": t.epochs}

    def checkpoint() -> None:
        if not lead:
            return
        saved_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "train_state": asdict(state),
        }
        path = save_checkpoint(
            job.checkpoint_dir, state.step, model=model.state_dict(), best=best_weights, state=saved_state
        )
        for cb in callbacks:
            cb.on_checkpoint(state, str(path))

    for cb in callbacks:
        cb.on_train_start(state, logs)
    t_start = time.perf_counter()
    rows_seen = 0
    while state.epoch < t.epochs and not state.stopped_early:
        net.train()
        for m in frozen_modules:
            m.eval()
        loss_sum, loss_rows = 0.0, 0
        t_epoch = time.perf_counter()
        epoch_rows = 0
        for batch in loader.batches(state.epoch, max_batches=steps_per_epoch, skip=state.batch_in_epoch):
            # Seed only the generators in use: torch.manual_seed also queues lazy seeds for every accelerator
            # backend, which costs 0.2-0.35 ms a step on a CPU-only build (measured by bench/train_overhead).
            step_seed = _step_seed(t.seed, rank, state.step)
            torch.default_generator.manual_seed(step_seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(step_seed)
            b = batch.to(device)
            out = net(b.inputs)
            loss = loss_fn(out, b.target if classification else b.target.view(-1, 1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # Gradients are already all-reduced here, so every rank sees the same norm and takes the same branch.
            gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
            if not torch.isfinite(gnorm):
                state.nonfinite_steps += 1
                state.nonfinite_run += 1
                optimizer.zero_grad(set_to_none=True)
                if state.nonfinite_run >= t.max_nonfinite_steps:
                    raise TrainingError(
                        f"{state.nonfinite_run} consecutive steps had a non-finite loss or gradient (epoch "
                        f"{state.epoch + 1}, step {state.step}); lower trainer.learning_rate, set "
                        "trainer.grad_clip, or check the data for extreme values"
                    )
            else:
                state.nonfinite_run = 0
                optimizer.step()
                scheduler.step()
            state.step += 1
            state.batch_in_epoch += 1
            n = len(b)
            loss_value = float(loss.detach())
            if math.isfinite(loss_value):
                loss_sum += loss_value * n
                loss_rows += n
            rows_seen += n
            epoch_rows += n
            if lead:
                logs["loss"] = loss_value
                logs["rows_per_s"] = epoch_rows * world / max(time.perf_counter() - t_epoch, 1e-9)
                for cb in callbacks:
                    cb.on_step_end(state, logs)
            if t.checkpoint_every_steps and state.step % t.checkpoint_every_steps == 0:
                checkpoint()
        epoch_time = time.perf_counter() - t_epoch
        train_loss = _all_reduce_mean(loss_sum, loss_rows, device)
        metrics = evaluator.run(model, val_loader, loss_fn)
        entry = {
            "epoch": float(state.epoch + 1),
            "train_loss": train_loss,
            "lr": float(scheduler.get_last_lr()[0]),
            "rows_per_s": epoch_rows * world / max(epoch_time, 1e-9),
            **metrics,
        }
        state.history.append(entry)
        if watch is not None:
            if watch not in metrics:
                raise TrainingError(
                    f"trainer.early_stopping.metric {watch!r} is not reported; available: {', '.join(metrics)}"
                )
            value = metrics[watch]
            assert es is not None
            delta = es.min_delta
            best = state.best_metric
            better = best is None or (value < best - delta if mode == "min" else value > best + delta)
            # Before min_epochs nothing counts: a lucky early epoch on a small validation split is noise.
            if state.epoch + 1 < job.min_epochs:
                pass
            elif better:
                state.best_metric, state.best_epoch = value, state.epoch
                state.epochs_without_improvement = 0
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()} if lead else None
            else:
                state.epochs_without_improvement += 1
                if state.epochs_without_improvement >= es.patience:
                    state.stopped_early = True
        state.epoch += 1
        state.batch_in_epoch = 0
        checkpoint()
        if lead:
            logs.update(entry)
            for cb in callbacks:
                cb.on_epoch_end(state, entry)

    if lead:
        final = best_weights if best_weights is not None else model.state_dict()
        out = Path(job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in final.items()}, str(out / "weights.safetensors"))
        result = asdict(state)
        result["train_seconds"] = time.perf_counter() - t_start
        result["rows_seen"] = rows_seen * world
        result["steps_per_epoch"] = steps_per_epoch
        (out / "result.json").write_text(json.dumps(result, indent=2))
        for cb in callbacks:
            cb.on_train_end(state, logs)
    return state
