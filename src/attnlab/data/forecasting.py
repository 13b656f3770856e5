"""Long-horizon forecasting data: a multichannel series cut into (input, horizon) windows.

Protocol of the field's standard code (Zhou et al. 2021 "Informer"; Wu et al. 2021
"Autoformer"; Zeng et al. 2023 "DLinear" and Nie et al. 2023 "PatchTST" reuse their
``Dataset_ETT_hour`` / ``Dataset_Custom``):

* The series is split in time. ETT hourly files (``ETTh1``, ``ETTh2``) use 12 / 4 / 4 months
  (rows ``[0, 8640)``, ``[8640, 11520)``, ``[11520, 14400)``; the rest of the file is unused);
  ETT 15-minute files (``ETTm*``) the same months at four rows an hour; any other series
  0.7 / 0.1 / 0.2 of its rows (``Dataset_Custom``: ``int(0.7 T)`` train, ``int(0.2 T)``
  test, the rest validation). Validation and test windows start ``input_length`` rows before
  their border, so their first forecast begins exactly at the border.
* A per-channel mean / standard deviation is fitted on the training rows only (a scaler fitted
  on more leaks the future) and applied to every split; losses and metrics are on these
  scaled values, as in the papers.
* Window ``i`` of a split is input rows ``[i, i + L)`` and target rows ``[i + L, i + L + H)``;
  every window of the split is an example (stride 1).
* ``features``: ``M`` all channels in and out; ``S`` the target channel alone; ``MS`` all
  channels in, the target out. As in ``Dataset_Custom`` the target channel is moved last.

Files (read by `attnlab.data.forecast_files`): a CSV of dated rows or an ``.npy`` / ``.npz`` (T, C) array;
missing values refused, or filled split by split (``nan="interpolate"``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.config import check_choice
from attnlab.data.base import TaskData
from attnlab.data.forecast_dates import future_dates
from attnlab.data.forecast_files import NAN_POLICIES, Series, fill_series, keep_columns, read_series, row_place
from attnlab.errors import ConfigError, DataError

__all__ = ["FEATURES", "NAN_POLICIES", "Series", "WindowDataset", "fill_series", "future_dates", "generated_series", "load_forecasting_task",
           "read_series", "split_borders"]

FEATURES = ("M", "S", "MS")
_ETT_MONTH = 30 * 24  # rows a month in ETT hourly data (the Informer code's 12 * 30 * 24 borders)


def generated_series(length: int = 2400, channels: int = 4, seed: int = 0) -> Series:
    """A built-in hourly series: daily and weekly cycles, a slow trend, coupled channels, noise.

    It stands in when ``--data`` is left out, so ``--task forecasting`` runs anywhere; the
    generator is fixed (seeded by ``seed``), so two runs see the same series.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    daily = np.sin(2 * np.pi * t / 24)
    weekly = np.sin(2 * np.pi * t / (24 * 7))
    cols = []
    for c in range(channels):
        phase = rng.uniform(0, 2 * np.pi)
        a, b = rng.uniform(0.5, 1.5, size=2)
        trend = 0.3 * c * t / length
        cols.append(a * np.sin(2 * np.pi * t / 24 + phase) + b * weekly + trend + 0.2 * rng.standard_normal(length))
    values = np.stack(cols, axis=1)
    values[:, -1] = 0.6 * values[:, :-1].mean(axis=1) + 0.8 * daily + 0.1 * rng.standard_normal(length)  # a target driven by the others
    start = datetime(2020, 1, 1)
    dates = [(start + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(length)]
    return Series(values, [f"c{i}" for i in range(channels - 1)] + ["target"], dates, "generated")


def split_borders(length: int, input_length: int, split: str, name: str = "") -> tuple[list[int], list[int]]:
    """Row borders ``(starts, ends)`` of train / val / test, as Informer's data loaders.

    ``split``: ``ett-hour`` (12 / 4 / 4 months of hourly rows), ``ett-minute`` (the same at
    four rows an hour), ``ratio`` (0.7 / 0.1 / 0.2), or ``auto`` (ETT by the file name
    ``ETTh*`` / ``ETTm*``, else ratio). Val and test start ``input_length`` rows early.
    """
    if split == "auto":
        stem = Path(name).stem
        split = "ett-hour" if re.match(r"ETTh\d", stem) else "ett-minute" if re.match(r"ETTm\d", stem) else "ratio"
    L = input_length
    if split in ("ett-hour", "ett-minute"):
        m = _ETT_MONTH * (4 if split == "ett-minute" else 1)
        ends = [12 * m, 16 * m, 20 * m]
        if length < ends[-1]:
            raise DataError(f"{name}: {length} rows; the ETT split needs {ends[-1]} (20 months of "
                            f"{'quarter-' if split == 'ett-minute' else ''}hourly rows); set --data.split ratio")
        return [0, ends[0] - L, ends[1] - L], ends
    if split != "ratio":
        raise ConfigError(f"--data.split must be one of ['auto', 'ett-hour', 'ett-minute', 'ratio'], got {split!r}")
    n_train, n_test = int(length * 0.7), int(length * 0.2)
    n_val = length - n_train - n_test
    return [0, n_train - L, length - n_test - L], [n_train, n_train + n_val, length]


class WindowDataset(Dataset):
    """Every (input, target) window of a scaled series segment, stride 1.

    Item ``i``: x = ``inputs[:, i : i + L]`` (C_in, L), y = ``targets[:, i + L : i + L + H]``
    (C_out, H), both float32. ``start`` is the segment's first row in the whole series, so
    ``start + i + L`` is the row where window ``i``'s forecast begins; ``dates`` (one per row
    of the segment, or None) label the report's time axis.
    """

    def __init__(self, inputs: Tensor, targets: Tensor, input_length: int, horizon: int, start: int = 0,
                 dates: Sequence[str] | None = None):
        self.inputs, self.targets = inputs, targets  # (C_in, T), (C_out, T)
        self.input_length, self.horizon, self.start = input_length, horizon, start
        self.dates = dates

    def __len__(self) -> int:
        return max(self.inputs.shape[1] - self.input_length - self.horizon + 1, 0)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        a, b = index + self.input_length, index + self.input_length + self.horizon
        return self.inputs[:, index:a], self.targets[:, a:b]


def _check_scaled(series: Series, names: list[str], values: np.ndarray, train_end: int, mean: np.ndarray,
                  std: np.ndarray, scaled: Tensor) -> None:
    """Refuse values the scaler or float32 cannot hold (an infinite standard deviation turned a
    channel into zeros; a value beyond float32 once scaled, into inf), naming the largest cell."""
    bad = ~(np.isfinite(mean) & np.isfinite(std))
    if bad.any():
        c = int(np.argmax(bad))
        r = int(np.argmax(np.abs(values[:train_end, c])))
    elif not bool(torch.isfinite(scaled).all()):
        c, r = (int(i) for i in torch.nonzero(~torch.isfinite(scaled))[0])
    else:
        return
    raise DataError(f"{series.source}: {row_place(series, r)}, column {names[c]!r}: {values[r, c]:g} is too large to "
                    "standardise (the training rows' mean and standard deviation, then float32, must hold it)")


def load_forecasting_task(
    path: str | None, *, seed: int, input_length: int = 336, horizon: int = 96, features: str = "M",
    target: str | None = None, nan: str = "refuse", split: str = "auto", date_column: str = "date",
    date_format: str | None = None, channels: Sequence[str] | None = None,
) -> TaskData:
    """Windows of a series file (or the built-in generated series when ``path`` is None).

    ``info`` (saved in the run's data.json) holds what predict needs: the channel names in
    model order, the scaler, L, H, the features mode and the target. ``channels``: the columns
    to read, in this order (a finished run's ``info.channels``: its model's inputs); the file's
    other columns are left out and a missing one is refused by name.
    """
    check_choice("data", "features", features, FEATURES)
    check_choice("data", "nan", nan, NAN_POLICIES)
    for name, value in (("input_length", input_length), ("horizon", horizon)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"--data.{name} must be an integer >= 1, got {value!r}")
    if date_format is not None and (not isinstance(date_format, str) or "%" not in date_format):
        raise ConfigError(f"--data.date_format must be a strptime format such as '%Y/%m/%d %H:%M', got {date_format!r}")
    series = (generated_series(seed=0) if path is None  # a run's channels: other columns are not read
              else read_series(path, date_column=date_column, nan=nan, date_format=date_format, columns=channels,
                               fill=False))
    if channels is not None and path is None:
        keep_columns(series, channels)
    where = series.source
    T = len(series.values)
    names = list(series.names)
    target = names[-1] if target is None else str(target)
    if target not in names:
        raise ConfigError(f"--data.target {target!r} is not a channel of {where}; channels: {names}")
    order = [i for i, n in enumerate(names) if n != target] + [names.index(target)]  # target last (Dataset_Custom)
    names = [names[i] for i in order]
    L, H = input_length, horizon
    if T < L + H:
        raise DataError(f"{where}: {T} rows, shorter than input_length + horizon = {L} + {H} = {L + H}")
    starts, ends = split_borders(T, L, split, where)
    if starts[1] < 0 or starts[2] < 0:
        raise DataError(f"{where}: {T} rows leave the training split ({ends[0]} rows) shorter than input_length {L}")
    fill_series(series, ends)  # each split from itself and the past only
    values = series.values[:, order]
    train_rows = values[: ends[0]]
    with np.errstate(over="ignore", invalid="ignore"):
        mean = train_rows.mean(axis=0)
        std = train_rows.std(axis=0)  # population std, as sklearn's StandardScaler the papers use
        std = np.where(std > 0, std, 1.0)
        scaled = torch.from_numpy((values - mean) / std).float().T.contiguous()  # (C, T)
    _check_scaled(series, names, values, ends[0], mean, std, scaled)
    if features == "S":
        inputs, targets, in_names, out_names = scaled[-1:], scaled[-1:], names[-1:], names[-1:]
    elif features == "MS":
        inputs, targets, in_names, out_names = scaled, scaled[-1:], names, names[-1:]
    else:
        inputs, targets, in_names, out_names = scaled, scaled, names, names
    sets = []
    for split_name, a, b in zip(("train", "val", "test"), starts, ends):
        ds = WindowDataset(inputs[:, a:b], targets[:, a:b], L, H, start=a,
                           dates=None if series.dates is None else series.dates[a:b])
        if len(ds) == 0:
            raise DataError(f"{where}: the {split_name} split (rows {a}-{b}) holds no window of "
                            f"input_length + horizon = {L + H} rows; shorten them or give a longer series")
        sets.append(ds)
    keep = [names.index(n) for n in in_names]
    info: dict[str, Any] = {
        "kind": "forecasting", "source": where, "input_length": L, "horizon": H, "features": features, "target": target,
        "channels": in_names, "outputs": out_names, "mean": [float(mean[i]) for i in keep],
        "std": [float(std[i]) for i in keep], "borders": {"start": starts, "end": ends}, "date_column": date_column,
        "date_format": date_format, "nan": nan,
        "dates": series.dates is not None, "rows": T, "filled_missing": series.filled,
    }
    return TaskData("forecasting", *sets, num_classes=0, class_names=[], input_shape=(len(in_names), L), metric="mse",
                    info=info)
