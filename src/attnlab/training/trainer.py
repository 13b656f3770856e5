"""The one training loop: AdamW, warm-up + cosine, clipping, accumulation, bf16 autocast,
early stopping, checkpoints with exact resume, and DDP. Modality-agnostic: the task comes
in as an ``Objective`` and data sets; the trainer never looks inside a batch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from attnlab.errors import AttnlabError, ConfigError
from attnlab.training.batch_draws import augment_batch
from attnlab.training.checkpoint import (
    check_mid_epoch_position,
    checkpoint_exists,
    load_checkpoint,
    restore_rng_states,
    rng_state_tensors,
    save_checkpoint,
    save_weights,
)
from attnlab.training.distributed import DistInfo, all_have, pick_device
from attnlab.training.epoch_batches import EpochBatches
from attnlab.training.ema import WeightEma
from attnlab.training.loggers import RunLogger
from attnlab.training.param_groups import apply_freeze, parameter_groups, parse_freeze
from attnlab.training.objectives import Objective
from attnlab.training.precision import resolve_precision
from attnlab.training.loaders import eval_loader, is_stream, reraise_worker_error, train_loader
from attnlab.training.schedule import epoch_step, warmup_cosine
from attnlab.training.train_config import TrainConfig

__all__ = ["TrainConfig", "Trainer", "TrainingError", "to_device"]

log = logging.getLogger(__name__)


class TrainingError(AttnlabError, RuntimeError):
    """Training cannot go on (e.g. the loss stays NaN); the last good checkpoint is kept."""


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


@dataclass
class _State:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already consumed (mid-epoch checkpoints)
    # Their loss sum and example count over every process, so a mid-epoch resume logs the epoch's
    # train_loss over all its batches, not only those after the resume.
    loss_sum: float = 0.0
    loss_count: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    bad_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Train ``model`` on ``train_set`` under ``objective``; validate on ``val_set``.

    ``run_dir`` gets ``checkpoint/``, ``best.safetensors``, ``metrics.jsonl`` and TensorBoard
    logs (rank 0 only). ``batch_augment(batch, generator=g)`` is applied to training batches on the
    device, g seeded by (seed, epoch, batch, rank) (`attnlab.training.batch_draws`).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_set: Dataset,
        val_set: Dataset | None,
        config: TrainConfig,
        *,
        run_dir: str | Path | None = None,
        dist: DistInfo | None = None,
        collate_fn: Callable | None = None,
        batch_augment: Callable[[Any], Any] | None = None,
        callbacks: list[Callable[["Trainer", int, dict[str, Any]], None]] | None = None,
    ):
        self.config = config
        self.dist = dist or DistInfo()
        self.device = pick_device(config.device, self.dist.local_rank)
        self.model = model.to(self.device)
        self.objective = objective
        self.train_set, self.val_set = train_set, val_set
        self.collate_fn = collate_fn
        self.batch_augment = batch_augment
        self.callbacks = list(callbacks or [])
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.is_main = self.dist.is_main
        self.precision = resolve_precision(config.precision, self.device)
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.train_loader, self.sampler = train_loader(train_set, config, self.dist, collate_fn, self.device)
        self._eval_loaders: dict[int, tuple[Dataset, Any]] = {}  # id -> (split, its loader)
        if len(self.train_loader) == 0:
            raise ConfigError(
                f"training set of {len(train_set)} examples gives no full batch of {config.batch_size} "
                f"per process ({self.dist.world_size} process(es)); lower --train.batch_size"
            )
        # An epoch's last accumulation group may hold fewer micro-batches: it steps too (Hugging Face's Trainer)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.accumulate)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.frozen = apply_freeze(self.model, parse_freeze(config.freeze))
        groups = parameter_groups(self.model, lr=config.lr, weight_decay=config.weight_decay,
                                  layer_decay=config.layer_decay, head_lr=config.head_lr)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.adam_betas),
                                           fused=config.fused_optimizer or None)
        if config.warmup_ratio is not None:
            warmup = int(round(config.warmup_ratio * self.total_steps))
        else:
            warmup = int(round(config.warmup_epochs * self.steps_per_epoch))
        if config.schedule == "step":
            self.scheduler = epoch_step(self.optimizer, self.steps_per_epoch, config.lr_hold_epochs, config.lr_gamma,
                                        config.warmup_epochs, config.step_warmup_factor)
        else:
            self.scheduler = warmup_cosine(self.optimizer, min(warmup, self.total_steps), self.total_steps, config.min_lr_factor)
        self.state = _State()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.ema = WeightEma(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.logger = RunLogger(self.run_dir, enabled=self.is_main)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ---- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoint" if self.run_dir is not None else None

    def save(self) -> None:
        if not self.is_main or self.checkpoint_dir is None:
            return
        state = dict(vars(self.state))
        state["scheduler"] = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        state["world_size"] = self.dist.world_size  # a mid-epoch position is per rank: resumable at this size only
        state["batch_size"] = self.config.batch_size  # and counted in batches of this size
        extra = rng_state_tensors(self.device)
        if self.best_weights is not None:
            extra.update({f"best.{k}": v for k, v in self.best_weights.items()})
        if self.ema is not None:
            extra.update({f"ema.{k}": v for k, v in self.ema.state_tensors().items()})
        save_checkpoint(self.checkpoint_dir, model=self.model, optimizer=self.optimizer, state=state, extra_tensors=extra)

    def resume(self, run_dir: str | Path | None = None) -> None:
        directory = Path(run_dir) / "checkpoint" if run_dir is not None else self.checkpoint_dir
        if directory is None or not checkpoint_exists(directory):
            raise AttnlabError(f"nothing to resume: no checkpoint in {directory}")
        state, extra = load_checkpoint(directory, model=self.model, optimizer=self.optimizer)
        for group in self.optimizer.param_groups:  # loading put back the saved run's kernel choice: this run's wins
            group["fused"] = self.config.fused_optimizer or None
        sched = state.pop("scheduler")
        if state["epoch"] > self.config.epochs:  # fit would train nothing and the run would say it ran fewer epochs
            raise ConfigError(f"{directory} has trained {state['epoch']} epochs already; resume it with --epochs "
                              f"{state['epoch']} or more (not {self.config.epochs})")
        check_mid_epoch_position(directory, state, world_size=self.dist.world_size, batch_size=self.config.batch_size)
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **sched})
        self._check_schedule(directory, sched.get("_last_lr"))
        self.state = _State(**state)
        if not self.is_main:  # the saved sums are every process's: one process carries them on
            self.state.loss_sum, self.state.loss_count = 0.0, 0
        restore_rng_states(extra, self.device)
        best = {k[len("best."):]: v for k, v in extra.items() if k.startswith("best.")}
        self.best_weights = best or None
        if self.ema is not None:
            self.ema.load_state_tensors({k[len("ema."):]: v for k, v in extra.items() if k.startswith("ema.")})
        self.logger.forget_after(self.state.epoch)  # lines logged after this checkpoint are redone
        log.info("resumed at epoch %d, step %d", self.state.epoch, self.state.step)

    def _check_schedule(self, directory: Path, saved: list[float] | None) -> None:
        """Say when the schedule rebuilt from this run's settings (--epochs, warm-up, batch size) is not the one
        the checkpoint followed: the rate jumps at the resumed step, and the run is not one started this way."""
        last = self.scheduler.last_epoch
        now = [base * factor(last) for base, factor in zip(self.scheduler.base_lrs, self.scheduler.lr_lambdas)]
        if saved is not None and any(abs(a - b) > 1e-9 * max(abs(b), 1e-30) for a, b in zip(now, saved)):
            log.warning("resuming %s at step %d: the learning-rate schedule of the settings given (--epochs, warm-up, "
                        "batch size) sets lr %.4g there, the checkpoint's set %.4g; training goes on with the new "
                        "schedule, so it is not the run these settings would have trained from the start",
                        directory, last, now[0], saved[0])

    # ---- loop --------------------------------------------------------------------------
    def _batches(self, dataset: Dataset):
        known = self._eval_loaders.get(id(dataset))  # one loader per split: its persistent workers serve every epoch
        if known is None or known[0] is not dataset:
            known = self._eval_loaders[id(dataset)] = (dataset, eval_loader(
                dataset, max(256, self.config.batch_size), self.config.num_workers, self.collate_fn, self.device))
        try:
            for batch in known[1]:
                yield to_device(batch, self.device)
        except AttnlabError as exc:
            reraise_worker_error(exc)

    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        self.model.eval()
        with self.autocast():
            return self.objective.evaluate(self.model, self._batches(dataset))

    def outputs(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """(what an ensemble averages, targets) over a data set: see ``objectives.Averageable``."""
        if not hasattr(self.objective, "outputs"):
            raise ConfigError(f"{type(self.objective).__name__} gives no outputs a deep ensemble can average")
        self.model.eval()
        with self.autocast():
            return self.objective.outputs(self.model, self._batches(dataset))

    def calibrate(self, dataset: Dataset) -> dict[str, float] | None:
        """Let the objective fit its post-training settings on ``dataset`` (validation), e.g. a
        multi-label decision threshold; None for objectives without any."""
        if not hasattr(self.objective, "calibrate"):
            return None
        self.model.eval()
        with self.autocast():
            return self.objective.calibrate(self.model, self._batches(dataset))

    def _validate(self) -> dict[str, float]:
        """Validation of the weights training would keep: the moving average when there is one."""
        assert self.val_set is not None
        if self.ema is None:
            return self.evaluate(self.val_set)
        with self.ema.applied(self.model):
            return self.evaluate(self.val_set)

    def _kept_state(self) -> dict[str, torch.Tensor]:
        return self.ema.shadow if self.ema is not None else self.model.state_dict()

    def _compare(self, value: float) -> int:
        """+1 better than the best so far, 0 a tie, -1 worse. NaN (weights gone bad) is never better:
        every comparison with it is False, which made a NaN val_loss "better" than any loss."""
        best = self.state.best_metric
        if value != value:
            return -1
        if best is None or best != best:  # a NaN best (a checkpoint of before this rule) is beaten by any number
            return 1
        if value == best:
            return 0
        return 1 if (value > best) == self.objective.greater_is_better else -1

    def _train_epoch(self, epoch: int) -> float:
        from tqdm import tqdm

        cfg = self.config
        self.sampler.set_epoch(epoch)
        if callable(getattr(self.train_set, "set_epoch", None)):  # per-item draws (attnlab.data.item_random), as HF does
            self.train_set.set_epoch(epoch)
        self.train_model.train()
        skip = self.state.batch_in_epoch
        stream = is_stream(self.train_set)  # under DDP one that may yield fewer batches (skip_bad) ends every rank's epoch at once
        agree = stream and self.dist.enabled and getattr(self.train_set, "skip_bad", True)
        batches = EpochBatches(self.train_loader, planned=len(self.train_loader), accumulate=cfg.accumulate, skip=skip,
                               lookahead=stream, agree=functools.partial(all_have, device=self.device) if agree else None)
        total_loss, total_n = (self.state.loss_sum, self.state.loss_count) if skip else (0.0, 0)
        bar = tqdm(
            batches, total=len(self.train_loader), initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (self.is_main and cfg.progress), leave=False, dynamic_ncols=True, mininterval=0.5,
        )
        self.optimizer.zero_grad(set_to_none=True)
        for micro in bar:
            index, batch = micro.index, to_device(micro.batch, self.device)
            if self.batch_augment is not None:  # each rank its own draws, replayed on resume
                batch = augment_batch(self.batch_augment, batch, seed=cfg.seed, epoch=epoch, index=index,
                                      rank=self.dist.rank, device=self.device)
            # DDP: skip the gradient all-reduce on all but the group's last micro-batch (forward and backward inside).
            sync = self.train_model.no_sync() if (self.dist.enabled and not micro.last) else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    loss, n = self.objective.loss(self.train_model, batch)
                finite = bool(torch.isfinite(loss))
                if finite:
                    (loss / micro.group).backward()  # an epoch's last group may be smaller: the mean of what it has
            if not finite:
                self._bad_step(epoch, index)
                continue
            total_loss += loss.item() * n
            total_n += n
            self.state.batch_in_epoch = index + 1
            if micro.last:
                self._optimizer_step(micro.scale)
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}", refresh=False)
                if cfg.checkpoint_every and self.state.step % cfg.checkpoint_every == 0:
                    self.state.loss_sum, self.state.loss_count = self._global_sums(total_loss, total_n)
                    self.save()
        batches.log_shortfall(epoch, self.dist.rank, getattr(self.train_set, "skipped", None))
        self.state.batch_in_epoch, self.state.loss_sum, self.state.loss_count = 0, 0.0, 0
        bar.close()
        total_loss, total_n = self._global_sums(total_loss, total_n)
        return total_loss / total_n if total_n else float("nan")  # every step skipped: no loss (null), not 0.0

    def _global_sums(self, loss_sum: float, count: int) -> tuple[float, int]:
        """The loss sum and example count over every process's batches (as one process with the global batch
        logs them); a collective under DDP, which every rank reaches at the same step."""
        if not self.dist.enabled:
            return loss_sum, count
        sums = torch.tensor([loss_sum, float(count)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(sums)
        return float(sums[0]), int(sums[1])

    def _bad_step(self, epoch: int, index: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.state.bad_steps += 1
        log.warning("non-finite loss at epoch %d batch %d: step skipped (%d/%d)", epoch + 1, index, self.state.bad_steps, self.config.max_bad_steps)
        if self.state.bad_steps > self.config.max_bad_steps:
            raise TrainingError(
                f"loss was NaN/Inf in {self.state.bad_steps} steps (limit {self.config.max_bad_steps}); stopped. "
                f"The last good checkpoint is kept; try a lower --train.lr"
            )

    def _optimizer_step(self, scale: float = 1.0) -> None:
        """``scale``: a group cut short by a stream had its losses divided by the planned group size."""
        cfg = self.config
        if scale != 1.0:
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale)
        if cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if not torch.isfinite(norm):
                self._bad_step(self.state.epoch, self.state.batch_in_epoch)
                return
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.state.step)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1

    def _stopped_early(self) -> bool:
        patience = self.config.early_stopping_patience
        return bool(patience) and self.state.bad_epochs >= patience

    def fit(self) -> dict[str, Any]:
        """Train for the configured epochs (from the resumed state, if any); return the best record."""
        cfg = self.config
        start = time.perf_counter()
        for epoch in range(self.state.epoch, cfg.epochs):
            if self._stopped_early():  # a resumed run that had stopped early stays stopped, as it would have
                break
            try:
                train_loss = self._train_epoch(epoch)
            except AttnlabError as exc:  # from a DataLoader worker it carries the worker's traceback
                reraise_worker_error(exc)
            record: dict[str, Any] = {"epoch": epoch + 1, "step": self.state.step, "train_loss": train_loss,
                                      "lr": self.scheduler.get_last_lr()[0]}
            if self.val_set is not None:
                val = self._validate()
                record.update({f"val_{k}": v for k, v in val.items()})
                value = val[self.objective.metric]
                verdict = self._compare(value)
                if verdict >= 0:  # on a tie keep the later, longer-trained weights
                    self.state.best_metric, self.state.best_epoch = value, epoch + 1
                    self.best_weights = {k: v.detach().cpu().clone() for k, v in self._kept_state().items()}
                self.state.bad_epochs = 0 if verdict > 0 else self.state.bad_epochs + 1
            self.state.epoch = epoch + 1
            self.state.history.append(record)
            self.logger.epoch(record)
            self.logger.scalars({k: v for k, v in record.items() if k != "epoch"}, epoch + 1)
            for callback in self.callbacks:
                callback(self, epoch + 1, record)
            if self.is_main:
                log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            self.save()
            if self._stopped_early():
                log.info("early stopping: no improvement in %d epochs", self.state.bad_epochs)
                break
        if self.best_weights is not None and cfg.keep == "best":
            self.model.load_state_dict(self.best_weights)
        elif self.ema is not None:
            self.model.load_state_dict(self.ema.shadow)
        if self.is_main and self.run_dir is not None:
            save_weights(self.model, self.run_dir / "model.safetensors")
        self.logger.close()
        return {"best_epoch": self.state.best_epoch, "best_val": self.state.best_metric,
                "epochs_run": self.state.epoch, "train_time_s": time.perf_counter() - start}

