"""Time-series classification data: the UCR archive's TSV format, or an ``.npz`` of arrays.

UCR format (Dau et al. 2019, "The UCR Time Series Archive"): a folder ``<Name>/`` holding
``<Name>_TRAIN.tsv`` and ``<Name>_TEST.tsv``, one series a line, the class label first and
then the values, tab-separated (commas are accepted too, as in the 2015 archive). Labels
keep their original spelling as class names (ECG200: ``"-1"``, ``"1"``), sorted
numerically when they are all numbers; a label like ``1.0000000e+00`` is written ``"1"``.

Multivariate extension: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``;
``x`` is (N, C, T) or (N, T) for one channel, ``y`` holds labels of any type (class names
are their ``str``).

Each series is z-normalised on its own, per channel (``normalize="zscore"``, the UCR
convention; ``"none"`` keeps raw values). Missing values (``NaN``), ragged rows, or text
where a number belongs raise a `DataError` that names the file and the line.

Validation: the UCR train sets are tiny (23 to 100 series for the four benchmarked sets),
so by default (``val_fraction=0``) nothing is held out and the "val" split is the training
set itself, evaluated unaugmented: it only monitors the fit, and the task trains with
``keep="last"``, so no weights are chosen on it (Fawaz et al. 2019 likewise train on the
whole train split). ``val_fraction > 0`` carves a stratified validation split from TRAIN,
deterministic in ``seed``.

Regression (``target="regression"``, `attnlab.data.targets`): the label is a number in its own
units instead of a class (never guessed: UCR class labels are numbers too). A label that is not
a finite number is a `DataError` naming the file and line (``.npz``: the array and index). The
validation split, when held out, is drawn at random rather than per class.

A finished run's data (evaluate another folder, ``--resume``) is read with the run's own classes
(``class_names``, in its output order), series shape (``series_shape``) and a regression run's
``target_scaler``: a label that is none of its classes, or series of another length or channel
count, is a `DataError` naming the file, the value and what the run has.

Shape: every item is (C, T) float32; labels int64 in 0..K-1 (regression: float32 values).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnlab.data.base import TaskData, TensorPairDataset
from attnlab.data.series_files import read_series_file, read_source, read_ucr_file, ucr_pair
from attnlab.data.splits import per_class_split
from attnlab.data.targets import TargetScaler, check_target, parse_numbers, random_split
from attnlab.errors import ConfigError, DataError

__all__ = ["NORMALIZATIONS", "SeriesAugment", "read_ucr_file", "read_series_file", "label_names", "znormalize",
           "normalize_series", "load_timeseries_task"]

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("zscore", "none")
# A series whose spread is below this is constant: it is centred, not scaled (no 0/0).
_FLAT_STD = 1e-8


def label_names(labels: list[str]) -> list[str]:
    """Distinct labels in class order: numeric order when every label is a number, else text order."""
    unique = sorted(set(labels))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


# --- normalisation -----------------------------------------------------------------------


def znormalize(x: np.ndarray) -> np.ndarray:
    """Per-series, per-channel z-score over time, in float64; a flat series is only centred.

    Shape: (..., T) -> same.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)  # population std (ddof=0), as the UCR archive uses
    return (x - mean) / np.where(std > _FLAT_STD, std, 1.0)


def normalize_series(x: np.ndarray, rule: str) -> Tensor:
    """Apply the rule recorded in ``TaskData.info["normalize"]``; training and predict share it.

    Shape: (N, C, T) float64 -> (N, C, T) float32.
    """
    if rule not in NORMALIZATIONS:
        raise DataError(f"unknown series normalisation {rule!r}; known: {list(NORMALIZATIONS)}")
    out = znormalize(x) if rule == "zscore" else np.asarray(x, dtype=np.float64)
    return torch.from_numpy(out.astype(np.float32))


# --- augmentation ------------------------------------------------------------------------


class SeriesAugment:
    """Batch augmentation for series: amplitude scaling, time shift, additive jitter.

    Each series is multiplied by ``1 + scale * n`` (n ~ N(0, 1), one draw per series),
    shifted by a whole number of steps in [-max_shift, max_shift] (the edge value fills
    the gap), then gets ``jitter * N(0, 1)`` noise per value (Um et al. 2017, "Data
    Augmentation of Wearable Sensor Data"; Iwana & Uchida 2021 survey). Draws come from
    ``generator`` or torch's global RNG, so a seeded run replays them.

    Shape: x (B, C, T) -> same.
    """

    def __init__(self, *, jitter: float = 0.0, scale: float = 0.0, max_shift: int = 0):
        if jitter < 0 or scale < 0 or max_shift < 0:
            raise ConfigError(f"SeriesAugment: jitter, scale and max_shift must be >= 0, got {jitter}, {scale}, {max_shift}")
        self.jitter, self.scale, self.max_shift = float(jitter), float(scale), int(max_shift)

    @property
    def active(self) -> bool:
        return self.jitter > 0 or self.scale > 0 or self.max_shift > 0

    def __repr__(self) -> str:
        return f"SeriesAugment(jitter={self.jitter}, scale={self.scale}, max_shift={self.max_shift})"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        B, C, T = x.shape
        if self.scale > 0:
            factor = 1 + self.scale * torch.randn(B, 1, 1, generator=generator, device=x.device, dtype=x.dtype)
            x = x * factor
        if self.max_shift > 0:
            shift = torch.randint(-self.max_shift, self.max_shift + 1, (B, 1, 1), generator=generator, device=x.device)
            src = (torch.arange(T, device=x.device).view(1, 1, T) - shift).clamp(0, T - 1)  # (B, 1, T)
            x = x.gather(2, src.expand(B, C, T))
        if self.jitter > 0:
            x = x + self.jitter * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x


# --- the task ----------------------------------------------------------------------------


def _target_values(path: Path, fmt: str, split: str, labels: list[str]) -> np.ndarray:
    """A split's labels as regression targets (N,) float64; a bad one names its file and line."""

    def where(i: int) -> str:
        if fmt == "npz":
            return f"{path}: y_{split}[{i}]"
        file = ucr_pair(path)[0 if split == "train" else 1]
        with open(file, encoding="utf-8") as f:
            rows = [n for n, line in enumerate(f, start=1) if line.strip()]
        return f"{file}:{rows[i]}"

    return parse_numbers(labels, where)


def _split_file(path: Path, fmt: str, split: str, array: str = "x") -> str:
    """Where a split comes from, for messages: its UCR file, or the .npz's array (``array``: "x"
    for the series, "y" for the labels)."""
    return str(ucr_pair(path)[0 if split == "train" else 1]) if fmt == "ucr-tsv" else f"{path}: {array}_{split}"


def _check_run_shape(path: Path, fmt: str, shape: tuple[int, ...], run: tuple[int, int]) -> None:
    """Series of the (C, T) shape a finished run's model takes, else a DataError naming both."""
    if tuple(shape) != run:
        what = f"series of length {shape[1]}" if shape[0] == run[0] else f"{shape[0]} channel(s) of length {shape[1]}"
        want = f"length {run[1]}" if shape[0] == run[0] else f"{run[0]} channel(s) of length {run[1]}"
        raise DataError(f"{_split_file(path, fmt, 'train')}: {what}; the run was trained on series of {want}")


def _check_run_labels(path: Path, fmt: str, labels: dict[str, list[str]], names: list[str]) -> None:
    """Every label is one of a finished run's classes (a class absent from the data is fine)."""
    known = set(names)
    for split, values in labels.items():
        unknown = sorted(set(values) - known)
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise DataError(f"{_split_file(path, fmt, split, 'y')}: label {unknown[0]!r}{more} is not one of the run's "
                            f"{len(names)} classes {names}")


def load_timeseries_task(
    path: str | Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.0,
    normalize: str = "zscore",
    jitter: float = 0.0,
    scale: float = 0.0,
    max_shift: int = 0,
    target: str = "class",
    class_names: list[str] | None = None,
    series_shape: tuple[int, int] | list[int] | None = None,
    target_scaler: dict[str, float] | None = None,
) -> TaskData:
    """A UCR folder (or ``.npz``) as a classification task; TEST is the test split.

    ``val_fraction``: share of each class of TRAIN held out for validation (stratified,
    shuffled by ``seed``); 0 (default) holds nothing out and validates on the training set
    (see the module docstring). ``normalize``: "zscore" per series, or "none".
    ``jitter`` / ``scale`` / ``max_shift``: `SeriesAugment` strengths (0 = off), applied to
    training batches as `TaskData.batch_augment`. ``target``: "class" or "regression" (the
    label is a number; see the module docstring). ``class_names`` / ``series_shape`` ((C, T)) /
    ``target_scaler``: a finished run's, to read other data as it was trained (module docstring).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"time-series data not found: {path}")
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"timeseries option normalize must be one of {list(NORMALIZATIONS)}, got {normalize!r}")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"timeseries option val_fraction must be in [0, 1), got {val_fraction}")
    regression = check_target(target, "timeseries", ("class", "regression")) == "regression"
    x_train, y_train, x_test, y_test, fmt = read_source(path)
    if normalize == "zscore" and x_train.shape[-1] < 2:  # z-normalising one value gives 0: every series would be 0
        raise DataError(f"{_split_file(path, fmt, 'train')}: series of length {x_train.shape[-1]}; z-normalisation "
                        "(the default) needs at least 2 values a series (--data.normalize none keeps raw values)")
    if series_shape is not None:
        _check_run_shape(path, fmt, x_train.shape[1:], tuple(int(n) for n in series_shape))
    if regression:
        names = ["target"]
        ytr, yte = (torch.from_numpy(_target_values(path, fmt, split, y)).float() for split, y in (("train", y_train), ("test", y_test)))
    elif class_names is not None:  # a finished run's classes, in its output order
        names = [str(n) for n in class_names]
        _check_run_labels(path, fmt, {"train": y_train, "test": y_test}, names)
        index = {n: i for i, n in enumerate(names)}
        ytr = torch.tensor([index[v] for v in y_train], dtype=torch.long)
        yte = torch.tensor([index[v] for v in y_test], dtype=torch.long)
    else:
        names = label_names(y_train)
        if len(names) < 2:
            raise DataError(f"{path}: the training split has a single class ({names}); classification needs two")
        unseen = sorted(set(y_test) - set(names))
        if unseen:
            raise DataError(f"{path}: test labels {unseen} never occur in the training split (classes {names})")
        index = {n: i for i, n in enumerate(names)}
        ytr = torch.tensor([index[v] for v in y_train], dtype=torch.long)
        yte = torch.tensor([index[v] for v in y_test], dtype=torch.long)
    xtr, xte = normalize_series(x_train, normalize), normalize_series(x_test, normalize)  # (N, C, T)
    n_channels, length = xtr.shape[1], xtr.shape[2]

    if val_fraction > 0:
        split = random_split(len(ytr), seed=seed, val_fraction=val_fraction, test_fraction=0.0) if regression else \
            per_class_split(ytr.numpy(), seed=seed, val_fraction=val_fraction, test_fraction=0.0)
        train_idx, val_idx = torch.from_numpy(split[0]), torch.from_numpy(split[1])
        train = TensorPairDataset(xtr[train_idx], ytr[train_idx], indices=train_idx, float_targets=regression)
        val = TensorPairDataset(xtr[val_idx], ytr[val_idx], indices=val_idx, float_targets=regression)
        validation = f"{len(val_idx)} series held out of TRAIN ({'random' if regression else 'stratified'}, seed {seed})"
    else:
        all_idx = torch.arange(len(ytr))
        train = TensorPairDataset(xtr, ytr, indices=all_idx, float_targets=regression)
        val = TensorPairDataset(xtr, ytr, indices=all_idx, float_targets=regression)  # monitoring only: see the module docstring
        validation = "none held out: the val split is the training set (monitoring only)"
    test = TensorPairDataset(xte, yte, indices=torch.arange(len(yte)), float_targets=regression)
    augment = SeriesAugment(jitter=jitter, scale=scale, max_shift=max_shift)
    info: dict[str, Any] = {
        "format": fmt, "source": str(path), "name": path.stem if fmt == "npz" else path.name,
        "length": int(length), "channels": int(n_channels), "normalize": normalize,
        "label_names": list(names), "validation": validation, "target": target,
        "augment": {"jitter": augment.jitter, "scale": augment.scale, "max_shift": augment.max_shift},
    }
    if regression:  # fitted on the training split only (a finished run's: the one its model learnt)
        info["target_scaler"] = TargetScaler.from_dict(target_scaler).to_dict() if target_scaler is not None else \
            TargetScaler.fit(train.y.numpy()).to_dict()
    data = TaskData("timeseries", train, val, test, num_classes=len(names), class_names=list(names),
                    input_shape=(n_channels, length), batch_augment=augment if augment.active else None, info=info,
                    target=target, metric="mse" if regression else "accuracy")  # fmt: skip
    logger.info("loaded timeseries %s: %s", info["name"], data.summary())
    return data
