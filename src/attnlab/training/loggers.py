"""Run logging: metrics.jsonl per epoch and TensorBoard scalars/images (rank 0 only)."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from attnlab import jsonsafe
from attnlab.training.checkpoint import atomic_write_text

__all__ = ["RunLogger"]

log = logging.getLogger(__name__)


class RunLogger:
    """metrics.jsonl lines and TensorBoard events under ``run_dir``. The TensorBoard writer is made
    at the first value logged, not here: a trainer is built (and its options checked) before the
    run directory is prepared, e.g. an ``--overwrite`` run's old outputs cleared."""

    def __init__(self, run_dir: Path | None, *, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled and run_dir is not None
        self._writer = None
        self._tensorboard = False
        if self.enabled and tensorboard:
            try:
                importlib.import_module("torch.utils.tensorboard")  # raises when tensorboard is absent
                self._tensorboard = True
            except ImportError:  # tensorboard is a dependency, but keep training if it is absent
                log.warning("tensorboard is not installed; TensorBoard logs are off")

    @property
    def writes_images(self) -> bool:
        """True when `image` reaches a TensorBoard writer (rank 0, tensorboard installed)."""
        return self._tensorboard

    def _tb(self):
        if self._writer is None and self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        return self._writer

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self._tb() is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{prefix}{key}", value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """image (H, W) or (H, W, 3) floats in [0, 1]."""
        if self._tb() is not None:
            fmt = "HW" if image.ndim == 2 else "HWC"
            self._writer.add_image(tag, image, step, dataformats=fmt)

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)  # a trainer alone (no `attnlab train`) may be first to write it
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(jsonsafe.dumps(record) + "\n")

    def forget_after(self, epoch: int) -> None:
        """Drop the metrics.jsonl lines of epochs after ``epoch``: a run killed after logging an
        epoch but before its checkpoint redoes that epoch on resume, which logs it again."""
        path = None if self.run_dir is None else self.run_dir / "metrics.jsonl"
        if not self.enabled or path is None or not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and _epoch_of(line) <= epoch]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(kept))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tensorboard = False  # closed for good: nothing logged after makes a new writer


def _epoch_of(line: str) -> float:
    """The epoch a metrics.jsonl line logs; a line a kill cut short (not JSON) is of no epoch kept."""
    try:
        return json.loads(line).get("epoch", 0)
    except json.JSONDecodeError:
        return float("inf")
