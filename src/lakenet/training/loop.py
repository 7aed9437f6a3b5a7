"""The per-worker training loop, plain PyTorch. It does not know who launched it (a thread, a local process,
a Spark task): the engine sets up torch.distributed (or not) and calls `train_worker` with a TrainJob.
"""

from __future__ import annotations

import functools
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

from lakenet.config.schema import Config
from lakenet.data.encoders import Preprocessor
from lakenet.data.loader import SplitLoader, plan_shards
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
from lakenet.training.callbacks import Callback
from lakenet.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from lakenet.training.job import WEIGHTS_FILE, TrainJob, TrainOutcome, WorkerContext
from lakenet.training.transfer import apply_pretrained, frozen_subtrees

__all__ = ["TrainJob", "TrainState", "WorkerContext", "resolve_device", "train_worker"]


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


class AnomalyLoss(nn.Module):
    """task: anomaly. Normal and unlabelled rows (target 0 or -1): their raw score, the reconstruction error, is
    minimised. Known anomalies (target 1): `push` penalises a good reconstruction of them (the inverse of their
    error, as in Deep SAD, Ruff et al. 2020); `ignore` leaves them out."""

    def __init__(self, labelled: str = "push", eps: float = 1e-2) -> None:
        super().__init__()
        self.push, self.eps = labelled == "push", eps

    def forward(self, score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s = score.view(-1)
        known = target == 1
        total = torch.where(known, 1.0 / (s + self.eps), s) if self.push else s * (~known)
        used = len(s) if self.push else int((~known).sum())
        return total.sum() / max(used, 1)


class RecommendLoss(nn.Module):
    """task: recommendation. A softmax over the catalogue (scores (B, n_items): the target is the item's index),
    or over the batch's items and sampled ones (scores (B, B + S): row i's own item is column i); rows with target
    -100 (no catalogue item, or rated below the bar) count for nothing."""

    def __init__(self, n_items: int) -> None:
        super().__init__()
        self.n_items = n_items

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = target >= 0
        if not bool(known.any()):
            return scores.sum() * 0.0  # keeps the graph (every DDP rank must backward)
        if scores.shape[1] != self.n_items:  # sampled: each row's positive sits on the diagonal
            target = torch.arange(len(target), device=target.device)
        return nn.functional.cross_entropy(scores[known], target[known])


def loss_for(pre: Preprocessor, cfg: Config, class_weights: torch.Tensor | None) -> nn.Module:
    """The training loss of the label's task."""
    task = pre.label.task
    if task == "recommendation":
        return RecommendLoss(pre.num_outputs)
    if task == "anomaly":
        return AnomalyLoss(cfg.anomaly.labelled)
    return nn.CrossEntropyLoss(weight=class_weights) if task == "classification" else nn.MSELoss()


def loss_target(task: str, target: torch.Tensor) -> torch.Tensor:
    """The target as the task's loss takes it: regression values as a column (B, 1)."""
    return target.view(-1, 1) if task == "regression" else target


def anomaly_probability(raw: np.ndarray) -> np.ndarray:
    """A raw anomaly score (≥ 0) mapped monotonically into [0, 1) for the binned ROC/PR figures."""
    return raw / (1.0 + raw)


class _Evaluator:
    """Validation figures summed over workers (confusion matrix / regression sums), then turned into metrics."""

    def __init__(self, pre: Preprocessor, device: torch.device, k: int = 10) -> None:
        self.pre, self.device, self.k = pre, device, k
        self.task = pre.label.task
        self.classification = self.task == "classification"

    @torch.no_grad()
    def run(self, model: nn.Module, loader: SplitLoader | None, loss_fn: nn.Module) -> dict[str, float]:
        if dist.is_initialized():
            # Each rank updated its BatchNorm statistics with its own last batch: evaluate rank 0's everywhere.
            for buf in model.buffers():
                if buf.is_floating_point():  # not counters, nor a frozen ONNX graph's bytes
                    dist.broadcast(buf, 0)
        model.eval()
        k = self.pre.num_outputs if self.classification else 1
        cm = np.zeros((k, k), dtype=np.int64)
        sums = np.zeros(5)
        loss_sum, n = 0.0, 0
        label = self.pre.label
        positive = (label.classes or []).index(label.positive) if label.positive in (label.classes or []) else None
        scores = BinaryScores()
        for batch in loader.batches(0) if loader is not None else []:
            b = batch.to(self.device)
            out = model(b.inputs)
            loss_sum += float(loss_fn(out, loss_target(self.task, b.target))) * len(b)
            n += len(b)
            if self.task == "recommendation":
                sums += self._ranks(out.float(), b.target)
            elif self.task == "anomaly":
                truth = b.target.cpu().numpy()
                known = truth >= 0
                raw = out.view(-1).float().cpu().numpy()
                scores.update(truth[known] == 1, anomaly_probability(raw[known]))
            elif self.classification:
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
        if self.task == "recommendation":
            hits, gain, rows = flat[2 + k * k : 2 + k * k + 3]
            if rows:
                metrics[f"val_hit_rate_at_{self.k}"] = float(hits / rows)
                metrics[f"val_ndcg_at_{self.k}"] = float(gain / rows)
        elif self.task == "anomaly":
            merged = BinaryScores(flat[2 + k * k + 5 :])
            for name, value in (("val_roc_auc", merged.roc_auc()), ("val_pr_auc", merged.average_precision())):
                if value is not None:
                    metrics[name] = value
        elif self.classification:
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

    def _ranks(self, scores: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        """Recommendation: over the rows with a catalogue item, [hits in the top k, NDCG@k, rows, 0, 0] (the
        item's place among every catalogue item's score; the user's other items are not left out here)."""
        known = target >= 0
        s, t = scores[known], target[known]
        if not len(t):
            return np.zeros(5)
        mine = s.gather(1, t.view(-1, 1))  # (B, 1)
        rank = (s > mine).sum(1).float()  # items scored above the right one
        hit = rank < self.k
        gain = torch.where(hit, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank))
        return np.array([float(hit.sum()), float(gain.sum()), float(len(t)), 0.0, 0.0])


def _all_reduce_mean(value: float, count: int, device: torch.device) -> float:
    if not dist.is_initialized():
        return value / max(count, 1)
    t = torch.tensor([value, float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t[0] / t[1].clamp(min=1))


def train_worker(job: TrainJob, ctx: WorkerContext, callbacks: Sequence[Callback] = ()) -> TrainState:
    """Train on this worker's shard; rank 0 checkpoints, calls callbacks and writes the outcome."""
    run = _WorkerRun(job, ctx, callbacks)
    run.restore()
    return run.fit()


class _WorkerRun:
    """One worker's training run: built from the job, then epochs until the budget or early stopping."""

    def __init__(self, job: TrainJob, ctx: WorkerContext, callbacks: Sequence[Callback]) -> None:
        self.job, self.cfg = job, job.config
        t = self.cfg.trainer
        self.rank, self.world = ctx.rank, ctx.world_size
        self.device = torch.device(ctx.device)
        self.lead = self.rank == 0
        self.callbacks = list(callbacks) if self.lead else []
        self.pre = job.preprocessor
        self.classification = self.pre.label.task == "classification"
        if job.refit and t.early_stopping is not None:
            raise TrainingError(
                "a refit on train+validation has no validation split to stop on: disable early stopping"
            )
        torch.manual_seed(t.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        model = build_model(job.spec, trusted=config_trust(self.cfg))
        init = load_file(job.init_weights) if job.init_weights and not job.resume else None
        apply_pretrained(model, init, job.frozen)
        del init
        self.model = model.to(self.device)
        self.frozen_modules = frozen_subtrees(self.model)
        self._loaders()
        self.optimizer = _optimizer(self.cfg, self.model, job.param_lrs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(self.cfg, self.steps_per_epoch))
        self.state = TrainState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        weight = torch.tensor(job.class_weights, dtype=torch.float32, device=self.device) if job.class_weights else None
        self.loss_fn: nn.Module = loss_for(self.pre, self.cfg, weight)
        self.evaluator = _Evaluator(self.pre, self.device, self.cfg.recommend.k)
        es = t.early_stopping
        # job.watch: "auto" resolved by the driver from the training split; a hand-made job falls back to val_loss
        self.watch = (job.watch or (es.metric if es.metric != "auto" else "val_loss")) if es else None
        self.mode = metric_mode(self.watch) if self.watch else "min"
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.clip = t.grad_clip if t.grad_clip is not None else float("inf")
        self.logs: dict[str, Any] = {"steps_per_epoch": self.steps_per_epoch, "epochs": t.epochs}
        self.rows_seen = 0

    def _loaders(self) -> None:
        """This rank's shards of the training (and validation) fragments, and the steps every rank takes."""
        job, cfg, t = self.job, self.cfg, self.cfg.trainer
        counts = job.fragment_counts
        train_splits: int | tuple[int, int] = (TRAIN, VAL) if job.refit else TRAIN
        train_counts = counts[:, TRAIN] + counts[:, VAL] if job.refit else counts[:, TRAIN]
        train_shards = plan_shards(train_counts, self.world)
        val_shards = plan_shards(counts[:, VAL], self.world)
        self.per_rank_batch = max(1, t.batch_size // self.world)
        loader = functools.partial(
            SplitLoader,
            job.snapshot,
            self.pre,
            split_cfg=job.split if job.split is not None else cfg.data.split,
            seed=t.seed,
            cache_mb=cfg.data.cache_mb,
        )
        self.loader = loader(
            split=train_splits, fragments=train_shards[self.rank], batch_size=self.per_rank_batch, shuffle=True
        )
        self.val_loader = None
        if cfg.data.split.val > 0 and not job.refit:
            self.val_loader = loader(
                split=VAL, fragments=val_shards[self.rank], batch_size=max(256, self.per_rank_batch), shuffle=False
            )
        rows_per_rank = [int(train_counts[s].sum()) for s in train_shards]
        # Every rank must take the same number of steps (DDP all-reduces each one): the smallest shard decides.
        self.steps_per_epoch = min((r + self.per_rank_batch - 1) // self.per_rank_batch for r in rows_per_rank)
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"The training split has too few usable rows for {self.world} worker(s) ({rows_per_rank}); "
                "add rows, lower engine.workers, or raise data.split.train."
            )

    def restore(self) -> None:
        """`resume`: weights, optimizer, schedule and loop position from the last complete checkpoint."""
        job = self.job
        if not job.resume:
            return
        ckpt = latest_checkpoint(job.checkpoint_dir)
        if ckpt is None:
            raise TrainingError(
                f"--resume: no complete checkpoint in {job.checkpoint_dir}; train without --resume to start over"
            )
        weights, self.best_weights, saved = load_checkpoint(ckpt)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainState(**saved["train_state"])
        self.state.resumed_from_step = self.state.step

    def checkpoint(self) -> None:
        if not self.lead:
            return
        saved_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "train_state": asdict(self.state),
        }
        path = save_checkpoint(
            self.job.checkpoint_dir,
            self.state.step,
            model=self.model.state_dict(),
            best=self.best_weights,
            state=saved_state,
        )
        for cb in self.callbacks:
            cb.on_checkpoint(self.state, str(path))

    def fit(self) -> TrainState:
        net: nn.Module = self.model
        if self.world > 1:
            # No buffer sync before every forward: rank 0's BatchNorm statistics are broadcast before validation
            # and only rank 0's are saved, so the per-step sync bought nothing but a collective (bench/ddp_local).
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, **_ddp_no_buffer_sync())
        state, t = self.state, self.cfg.trainer
        for cb in self.callbacks:
            cb.on_train_start(state, self.logs)
        t_start = time.perf_counter()
        while state.epoch < t.epochs and not state.stopped_early:
            t_epoch = time.perf_counter()
            loss_sum, loss_rows, epoch_rows = self._epoch(net, t_epoch)
            epoch_time = time.perf_counter() - t_epoch
            train_loss = _all_reduce_mean(loss_sum, loss_rows, self.device)
            metrics = self.evaluator.run(self.model, self.val_loader, self.loss_fn)
            entry = {
                "epoch": float(state.epoch + 1),
                "train_loss": train_loss,
                "lr": float(self.scheduler.get_last_lr()[0]),
                "rows_per_s": epoch_rows * self.world / max(epoch_time, 1e-9),
                **metrics,
            }
            state.history.append(entry)
            self._early_stopping(metrics)
            state.epoch += 1
            state.batch_in_epoch = 0
            self.checkpoint()
            if self.lead:
                self.logs.update(entry)
                for cb in self.callbacks:
                    cb.on_epoch_end(state, entry)
        if self.lead:
            self._write_outcome(time.perf_counter() - t_start)
        return state

    def _epoch(self, net: nn.Module, t_epoch: float) -> tuple[float, int, int]:
        """One pass over this rank's training shard: (sum of finite losses × rows, their rows, rows seen)."""
        state, t = self.state, self.cfg.trainer
        net.train()
        for m in self.frozen_modules:
            m.eval()
        loss_sum, loss_rows, epoch_rows = 0.0, 0, 0
        batches = self.loader.batches(state.epoch, max_batches=self.steps_per_epoch, skip=state.batch_in_epoch)
        for batch in batches:
            n, loss_value = len(batch), self._step(net, batch)
            if math.isfinite(loss_value):
                loss_sum += loss_value * n
                loss_rows += n
            self.rows_seen += n
            epoch_rows += n
            if self.lead:
                self.logs["loss"] = loss_value
                self.logs["rows_per_s"] = epoch_rows * self.world / max(time.perf_counter() - t_epoch, 1e-9)
                for cb in self.callbacks:
                    cb.on_step_end(state, self.logs)
            if t.checkpoint_every_steps and state.step % t.checkpoint_every_steps == 0:
                self.checkpoint()
        return loss_sum, loss_rows, epoch_rows

    def _step(self, net: nn.Module, batch: Any) -> float:
        """One optimizer step; a non-finite gradient skips it (too many in a row stop the run). Its loss."""
        state, t, device = self.state, self.cfg.trainer, self.device
        # Seed only the generators in use: torch.manual_seed also queues lazy seeds for every accelerator
        # backend, which costs 0.2-0.35 ms a step on a CPU-only build (measured by bench/train_overhead).
        step_seed = _step_seed(t.seed, self.rank, state.step)
        torch.default_generator.manual_seed(step_seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(step_seed)
        b = batch.to(device)
        out = net(b.inputs)
        loss = self.loss_fn(out, loss_target(self.pre.label.task, b.target))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Gradients are already all-reduced here, so every rank sees the same norm and takes the same branch.
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        if not torch.isfinite(gnorm):
            state.nonfinite_steps += 1
            state.nonfinite_run += 1
            self.optimizer.zero_grad(set_to_none=True)
            if state.nonfinite_run >= t.max_nonfinite_steps:
                raise TrainingError(
                    f"{state.nonfinite_run} consecutive steps had a non-finite loss or gradient (epoch "
                    f"{state.epoch + 1}, step {state.step}); lower trainer.learning_rate, set "
                    "trainer.grad_clip, or check the data for extreme values"
                )
        else:
            state.nonfinite_run = 0
            self.optimizer.step()
            self.scheduler.step()
        state.step += 1
        state.batch_in_epoch += 1
        return float(loss.detach())

    def _early_stopping(self, metrics: dict[str, float]) -> None:
        watch, state, es = self.watch, self.state, self.cfg.trainer.early_stopping
        if watch is None:
            return
        if watch not in metrics:
            raise TrainingError(
                f"trainer.early_stopping.metric {watch!r} is not reported; available: {', '.join(metrics)}"
            )
        value = metrics[watch]
        assert es is not None
        delta, best = es.min_delta, state.best_metric
        better = best is None or (value < best - delta if self.mode == "min" else value > best + delta)
        # Before min_epochs nothing counts: a lucky early epoch on a small validation split is noise.
        if state.epoch + 1 < self.job.min_epochs:
            return
        if better:
            state.best_metric, state.best_epoch = value, state.epoch
            state.epochs_without_improvement = 0
            self.best_weights = (
                {k: v.detach().clone() for k, v in self.model.state_dict().items()} if self.lead else None
            )
        else:
            state.epochs_without_improvement += 1
            if state.epochs_without_improvement >= es.patience:
                state.stopped_early = True

    def _write_outcome(self, seconds: float) -> None:
        state = self.state
        final = self.best_weights if self.best_weights is not None else self.model.state_dict()
        out = Path(self.job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in final.items()}, str(out / WEIGHTS_FILE))
        TrainOutcome(
            epoch=state.epoch,
            step=state.step,
            history=state.history,
            best_epoch=state.best_epoch,
            best_metric=state.best_metric,
            stopped_early=state.stopped_early,
            nonfinite_steps=state.nonfinite_steps,
            resumed_from_step=state.resumed_from_step,
            train_seconds=seconds,
            rows_seen=self.rows_seen * self.world,
            steps_per_epoch=self.steps_per_epoch,
        ).save(out)
        for cb in self.callbacks:
            cb.on_train_end(state, self.logs)
