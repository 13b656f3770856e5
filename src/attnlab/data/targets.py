"""What a label means beyond one class: a number (regression) or a set of labels (multi-label).

``--data.target`` chooses, per run and never by guessing: ``class`` (the default, one class
per example), ``regression`` (the label is a number in its own units) or ``multilabel`` (the
label is a set of class names). UCR labels are numbers that name classes, so a numeric label
alone does not make a regression task.

The loaders of the text, time-series and image families share these parsers, so a bad label
is reported the same way everywhere: one `DataError` naming the file, the line or row, and
the value. A regression target is standardised with a `TargetScaler` fitted on the training
split only (fitting it on more would leak the test targets); its mean and std go into the
run's data.json, so predictions come back in the target's own units.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnlab.data.file_checks import data_float
from attnlab.data.splits import check_fractions, split_counts
from attnlab.errors import ConfigError, DataError

__all__ = ["TARGETS", "TARGET_METRICS", "TargetScaler", "check_known", "check_target", "check_trained", "multi_hot", "parse_label_set",
           "parse_number", "parse_numbers", "random_split", "read_targets", "target_tensor"]

TARGETS = ("class", "regression", "multilabel")
# The validation metric that picks a run's best epoch, per target (TaskData.metric).
TARGET_METRICS = {"class": "accuracy", "regression": "mse", "multilabel": "map"}


def check_target(target: str, task: str, allowed: Sequence[str]) -> str:
    """``target`` if this task family supports it, else a ConfigError naming the choices."""
    if target not in TARGETS:
        raise ConfigError(f"--data.target must be one of {list(TARGETS)}, got {target!r}")
    if target not in allowed:
        raise ConfigError(f"task {task!r} does not support --data.target {target}; it takes {list(allowed)}")
    return target


@dataclass
class TargetScaler:
    """``(y - mean) / std`` of a regression target, fitted on the training split.

    The model learns standardised targets (an MSE of order 1 whatever the target's units);
    `inverse` maps its outputs back. A constant training target keeps std 1 (only centred).
    """

    mean: float
    std: float

    @classmethod
    def fit(cls, y: np.ndarray | Tensor) -> TargetScaler:
        y = np.asarray(y, dtype=np.float64)
        std = float(y.std())  # population std, as scikit-learn's StandardScaler
        return cls(mean=float(y.mean()), std=std if std > 1e-12 else 1.0)

    def transform(self, y: Tensor) -> Tensor:
        return (y - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetScaler:
        try:
            return cls(mean=float(d["mean"]), std=float(d["std"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"a regression run's target scaler is malformed: {d!r}") from None


def parse_number(text: str, where: str) -> float:
    """A finite number, or a DataError ``<where>: regression target ... is not a number``."""
    try:
        value = data_float(text)
    except ValueError:
        raise DataError(f"{where}: regression target {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: regression target {text!r} is not finite (NaN or infinite); drop or fill it first")
    return value


def parse_numbers(values: Sequence[str], where: Callable[[int], str]) -> np.ndarray:
    """Regression targets of a split; ``where(i)`` names the file and line of value i, and is
    called only to report a bad one (`parse_number`). Shape: -> (N,) float64."""
    out = np.empty(len(values), dtype=np.float64)
    for i, text in enumerate(values):
        try:
            value = data_float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            parse_number(str(text), where(i))  # raises, naming the place and the value
        out[i] = value
    return out


def parse_label_set(text: str, where: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``: comma-separated names, stripped, each once (order kept)."""
    names = [t.strip() for t in text.split(",")]
    if not any(names):
        raise DataError(f"{where}: empty label set {text!r}; a multi-label example needs at least one label")
    if not all(names):
        raise DataError(f"{where}: label set {text!r} has an empty name (stray comma?)")
    return list(dict.fromkeys(names))


def multi_hot(sets: Sequence[Sequence[str]], names: Sequence[str]) -> Tensor:
    """Label sets -> 0/1 rows over ``names``. Shape: -> (N, K) float32."""
    index = {n: i for i, n in enumerate(names)}
    y = torch.zeros(len(sets), len(names))
    for row, labels in enumerate(sets):
        y[row, [index[n] for n in labels]] = 1.0
    return y


def random_split(n: int, *, seed: int, val_fraction: float, test_fraction: float) -> tuple[np.ndarray, ...]:
    """Sorted (train, val, test) indices of a shuffled range: the split for targets that are not
    one class each (a regression value or a label set cannot be stratified by class)."""
    check_fractions(val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = split_counts(n, val_fraction, test_fraction)
    parts = (order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test])
    return tuple(np.sort(p).astype(np.int64) for p in parts)


def read_targets(target: str, file: Any, labels: Sequence[str], lines: Sequence[int]) -> list[Any]:
    """A split's label fields read as ``target``: the class name, a float, or a list of names;
    a bad field is a DataError naming ``file:line`` and the value."""
    if target == "regression":
        return parse_numbers(labels, lambda i: f"{file}:{lines[i]}").tolist()
    if target == "multilabel":
        return [parse_label_set(label, f"{file}:{line}") for label, line in zip(labels, lines)]
    return list(labels)


def check_known(target: str, file: Any, values: Sequence[Any], lines: Sequence[int], names: Sequence[str]) -> None:
    """Every class (or label of a set) of a validation / test split occurs in training."""
    if target == "regression":
        return
    known = set(names)
    for value, line in zip(values, lines):
        for name in value if target == "multilabel" else [value]:
            if name not in known:
                raise DataError(f"{file}:{line}: label {name!r} does not occur in the training file")


def check_trained(target: str, file: Any, values: dict[str, Sequence[Any]], lines: dict[str, Sequence[int]], *,
                  cut_splits: Sequence[str], seed: int) -> None:
    """Every class (or label of a set) of the held-out splits has an example in the training split.

    Class names are read from the whole training file before val / test (``cut_splits``) are cut
    from it, so a label whose every line lands in a held-out split would become a class the model
    never trains on. ``values`` / ``lines``: per split, the targets and their line numbers in
    ``file``; the first such label is a DataError naming it and its lines. A per-class split
    always leaves a class one training example; a random split (regression aside) may not.
    """
    if target == "regression":
        return
    known = {name for value in values["train"] for name in (value if target == "multilabel" else [value])}
    unseen: dict[str, list[tuple[int, str]]] = {}
    for split in cut_splits:
        for value, line in zip(values[split], lines[split]):
            for name in value if target == "multilabel" else [value]:
                if name not in known:
                    unseen.setdefault(name, []).append((line, split))
    if unseen:
        name, where = min(unseen.items(), key=lambda item: min(item[1]))
        numbers = sorted(line for line, _ in where)
        places = f"line{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
        splits = sorted({split for _, split in where})
        held = f"the {splits[0]} split" if len(splits) == 1 else f"the {' and '.join(splits)} splits"
        more = f" ({len(unseen) - 1} more label(s) likewise)" if len(unseen) > 1 else ""
        raise DataError(f"{file}:{numbers[0]}: label {name!r} does not occur in the training split: {places} with it "
                        f"went to {held} cut from this file (--seed {seed}){more}; add training examples of it or remove it")


def target_tensor(target: str, values: Sequence[Any], names: Sequence[str]) -> Tensor:
    """Class indices (N,) int64, regression values (N,) float32, or multi-hot rows (N, K) float32."""
    if target == "regression":
        return torch.tensor(list(values), dtype=torch.float32)
    if target == "multilabel":
        return multi_hot(values, names)
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[v] for v in values], dtype=torch.long)
