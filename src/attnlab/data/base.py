"""What every task's data looks like to the trainer, and helpers every loader shares.

A loader returns a `TaskData`: three map-style datasets that yield ``(x, y)`` pairs, the label
set, the input shape, and (for images) the `ImageSpec` that `prepare_image` needs to turn a
new file into a model input exactly as training did. Which loader serves which ``--task`` is
decided by the task families (``attnlab.tasks``), not here.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.data.item_random import ItemDraws
from attnlab.errors import ConfigError, DataError

__all__ = [
    "FileDataset",
    "read_each",
    "ClassIndexTensors",
    "ImageSpec",
    "TaskData",
    "TensorPairDataset",
    "require_data",
    "call_with_options",
    "check_splits",
    "option_defaults",
    "path_loader",
]

log = logging.getLogger(__name__)


@dataclass
class ImageSpec:
    """Everything needed to turn a raw image into a model input; saved as JSON in the run dir.

    Pixels are first scaled to [0, 1] (image files by 1/255; arrays by 1/`pixel_max`, which is
    16 for scikit-learn's digits and 255 for 8-bit images), then normalised per channel with
    `mean` and `std`.
    """

    channels: int
    height: int
    width: int
    mean: list[float]
    std: list[float]
    pixel_max: float = 255.0

    def __post_init__(self) -> None:
        self.mean = [float(m) for m in self.mean]
        self.std = [float(s) for s in self.std]
        if self.channels not in (1, 3):
            raise DataError(f"ImageSpec.channels must be 1 or 3, got {self.channels!r}")
        if self.height < 1 or self.width < 1:
            raise DataError(f"ImageSpec size must be positive, got {self.height}x{self.width}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise DataError(
                f"ImageSpec needs one mean and std per channel ({self.channels}), "
                f"got mean={self.mean} std={self.std}"
            )
        if any(not s > 0 for s in self.std):
            raise DataError(f"ImageSpec.std must be positive, got {self.std}")
        if not self.pixel_max > 0:
            raise DataError(f"ImageSpec.pixel_max must be positive, got {self.pixel_max!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of a prepared input."""
        return (self.channels, self.height, self.width)

    def normalise(self, x: Tensor) -> Tensor:
        """Per-channel ``(x - mean) / std`` of pixels already scaled to [0, 1].

        Training and `prepare_image` both call this, so the two paths agree bit for bit.

        Shape: x (..., C, H, W) -> same.
        """
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

    def fill_value(self) -> list[float]:
        """The normalised value of a black (zero) pixel, per channel: what padding should use."""
        return [-m / s for m, s in zip(self.mean, self.std)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageSpec:
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in d]
        if missing:
            raise DataError(f"image spec is missing keys {missing} (has {sorted(d)})")
        return cls(**{k: d[k] for k in names if k in d})


class TensorPairDataset(Dataset):
    """In-memory ``(x[i], y[i])`` pairs. The trainer may index `.x` / `.y` directly for speed.

    ``augment`` (optional) is applied to each item as it is fetched and may draw from torch's
    global RNG: it runs with that RNG seeded by (``seed``, epoch, index) (`attnlab.data.item_random`;
    the trainer calls ``set_epoch``) and restored after, so an item's augmentation is the same with
    any number of DataLoader workers and in a resumed run, and fresh each epoch. ``indices``
    (optional) records where each item sits in the source data (row of the raw arrays, or
    position in the sorted file list), so a prediction can be traced back to its input.

    ``float_targets``: keep ``y`` as float32 (a regression value (N,) or multi-hot labels
    (N, K)) instead of class indices.

    Shape: x (N, ...) float32, y (N,) int64 (or float32 (N,) / (N, K)), indices (N,) int64.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        augment: Callable[[Tensor], Tensor] | None = None,
        indices: Tensor | None = None,
        float_targets: bool = False,
        seed: int = 0,
    ):
        if len(x) != len(y):
            raise DataError(f"x and y have different lengths: {len(x)} inputs vs {len(y)} labels")
        if indices is not None and len(indices) != len(x):
            raise DataError(f"indices has {len(indices)} entries for {len(x)} items")
        self.x = x
        self.y = y.float() if float_targets else y.long()
        self.augment = augment
        self.indices = indices
        self.draws = ItemDraws(seed, len(x))

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentations items draw (the trainer calls it before each epoch)."""
        self.draws.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.x[index]
        if self.augment is not None:
            with self.draws.global_rng(index):
                x = self.augment(x)
        return x, self.y[index]


class FileDataset(Dataset):
    """Files decoded on each access: paths and labels only, so memory does not grow with the
    data set. The paths sit in one fixed-width NumPy string array, not a list of Python
    strings: forked DataLoader workers that touch Python objects' reference counts copy the
    pages they sit on, which grows every worker's memory with the data set (PyTorch issue
    #13246). ``indices`` records each item's position in the sorted file list, as
    `TensorPairDataset.indices` does. Subclasses decode in ``__getitem__``; ``what`` names the
    files in messages. ``float_targets``: keep ``y`` as float32 (multi-hot rows (N, K) of a
    label CSV) instead of class indices (N,) int64, as `TensorPairDataset` does.
    """

    what = "file"

    def __init__(self, paths, labels, *, indices: Tensor | None = None, float_targets: bool = False):
        if len(paths) != len(labels):
            raise DataError(f"{len(paths)} {self.what} paths for {len(labels)} labels")
        self.paths = np.array([str(p) for p in paths], dtype=np.str_)
        self.y = torch.as_tensor(np.asarray(labels, dtype=np.float32 if float_targets else np.int64))
        self.indices = indices

    def __len__(self) -> int:
        return len(self.paths)


def read_each(paths, read: Callable[[Any], Any], bad: list[int], *, skip_bad: bool, what: str):
    """``(i, read(path))`` for each file of ``paths`` that reads. An unreadable one raises the
    `DataError` naming it, or with ``skip_bad`` is logged and its position appended to ``bad``;
    how many were skipped is logged once the files are done. The one pass of every folder loader."""
    for i, path in enumerate(paths):
        try:
            value = read(path)
        except DataError as e:
            if not skip_bad:
                raise
            log.warning("skipped: %s", e)
            bad.append(i)
            continue
        yield i, value
    if bad:
        log.warning("skipped %d unreadable %s file(s) of %d", len(bad), what, len(paths))


class ClassIndexTensors:
    """A shard sample's ``.cls`` member (ASCII digits) -> its class index as a () int64 tensor,
    the one tensor of each class made once: ``torch.tensor`` costs ~7 us, a tenth of decoding a
    small image. What the image, audio and text shard decoders share. ``positions``: the run's index
    of each shard class (`attnlab.data.shards.class_positions`, relabelling by name); None: as written."""

    def __init__(self, positions: list[int] | None = None) -> None:
        self._made: dict[int, Tensor] = {}
        self.positions = positions

    def index(self, member: bytes, where: str) -> int:  # as an int: what class counts read
        try:
            label = int(member.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise DataError(f"{where}: .cls is not a class index: {member[:20]!r}") from None
        if self.positions is None:
            return label
        if not 0 <= label < len(self.positions):
            raise DataError(f"{where}: .cls {label} is past the shards' {len(self.positions)} classes")
        return self.positions[label]

    def __call__(self, member: bytes, where: str) -> Tensor:
        label = self.index(member, where)
        y = self._made.get(label)
        if y is None:
            y = self._made[label] = torch.tensor(label)
        return y


@dataclass
class TaskData:
    """A task's splits and what the model and trainer need to know about them.

    ``batch_augment``: training-time augmentation applied to a whole batch, ``x -> x`` with x
    (B, C, H, W), drawing from torch's global RNG. Vision loaders put augmentation here rather
    than per item (a per-item Python call costs more than the shift itself at ~60k items an
    epoch); the trainer calls it on training batches only. The datasets themselves yield
    unaugmented data. None means no augmentation.
    """

    task: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, ...]
    metric: str = "accuracy"
    spec: ImageSpec | None = None
    # What y means (`attnlab.data.targets`): "class" (an index), "regression" (a number in the
    # target's units, (N,) float) or "multilabel" (a 0/1 row over class_names, (N, K) float).
    target: str = "class"
    # What the objective chose on validation after training (a multi-label threshold); the run sets it.
    calibration: dict | None = None
    batch_augment: Callable[[Tensor], Tensor] | None = None
    # Non-vision task families: how to batch items, and JSON-ready facts inference needs
    # (vocabulary size, tokenizer file, sequence length...), saved in the run's data.json.
    collate_fn: Callable | None = None
    info: dict = field(default_factory=dict)
    # Text files the run directory keeps beside data.json (name -> content), e.g. tokenizer.json.
    files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if len(self.class_names) != self.num_classes:
            raise DataError(
                f"task {self.task!r}: {len(self.class_names)} class names for {self.num_classes} classes"
            )

    def summary(self) -> dict:
        """Split sizes, classes and input shape, JSON-ready (for logging and metrics.json)."""
        return {
            "task": self.task,
            "train_size": len(self.train),
            "val_size": len(self.val),
            "test_size": len(self.test),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
            "metric": self.metric,
            "target": self.target,
            "augment": None if self.batch_augment is None else repr(self.batch_augment),
        }


def require_data(task: str, data: Any, what: str) -> str:
    """Return ``data``, or raise a DataError saying that ``--data`` is needed and what it points to,
    or that the path does not exist (the CLI checks this too; loaders are also reached from saved
    run configs and scripts, whose data may since have moved)."""
    if data is None or str(data) == "":
        raise DataError(f"task {task!r} needs --data PATH ({what})")
    if not Path(data).exists():
        raise DataError(f"task {task!r}: data path not found: {data} (expected {what})")
    return data


def call_with_options(fn: Callable[..., TaskData], task: str, options: Mapping[str, Any], **fixed: Any) -> TaskData:
    """Call a loader with user options, rejecting names it does not take with a clear message."""
    params = inspect.signature(fn).parameters
    accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"task {task!r} has no option(s) {unknown}; it accepts {accepted}")
    for name, value in options.items():  # a switch given as text ('disabled') must not read as true
        annotation = str(params[name].annotation).replace(" ", "")
        if annotation in ("bool", "bool|None", "Optional[bool]") and not isinstance(value, bool) \
                and not (value is None and annotation != "bool"):
            raise ConfigError(f"--data.{name} must be true or false, got {value!r}")
    return fn(**fixed, **options)


def option_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """A loader's keyword options and their defaults (what `check_splits` names when one emptied a split)."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


_SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def check_splits(data: TaskData, options: Mapping[str, Any] | None = None) -> None:
    """Refuse a `TaskData` whose train, val or test split holds no example, naming the split and
    what emptied it: the ``--data.<split>_fraction`` / ``<split>_size`` option in ``options``
    (the loader's options, defaults included), or the shards it was streamed from. A split that
    is None (a task without one) or has no length (an unsized stream) is not checked."""
    for split, name in _SPLIT_NAMES.items():
        dataset = getattr(data, split)
        try:
            size = None if dataset is None else len(dataset)
        except TypeError:  # an iterable without a known length
            size = None
        if size == 0:
            raise DataError(f"task {data.task!r}: the {name} split is empty: {_emptied_by(data, split, options or {})}")


def _emptied_by(data: TaskData, split: str, options: Mapping[str, Any]) -> str:
    """Why ``split`` of ``data`` came out empty, and what to change, for `check_splits`."""
    if "shards" in data.info:
        return (f"the shards {data.info['shards']} hold no {split} sample (they were written so); "
                f"shard the data again with a nonzero --data.{split}_fraction")
    skipped = data.info.get("skipped_files") or []
    after = f" after {len(skipped)} unreadable file(s) were skipped" if skipped else ""
    if split == "train":
        held = [f"--data.{k} {options[k]}" for k in ("val_fraction", "test_fraction", "val_size", "test_size") if k in options]
        return f"nothing is left for training{after}" + (f" ({', '.join(held)}); hold out less" if held else "; give more data")
    for option in (f"{split}_fraction", f"{split}_size"):
        if option in options:
            value = options[option]
            if not value:
                return f"--data.{option} {value} gives it no example; every split needs one: give {option} above 0"
            return f"--data.{option} {value} gives it no example of this data{after}; give a larger {option} or more data"
    return f"the data give it no example{after}; every split needs at least one"


def path_loader(task: str, fn: Callable[..., TaskData], what: str, *, arg: str = "path",
                pattern: Callable[[str], bool] | None = None) -> Callable[..., TaskData]:
    """A task's loader ``load(data, *, seed, **options)`` for ``fn(<arg>=path, seed=..., **options)``:
    ``--data`` is required (`require_data`, naming ``what``) and options are checked by name.
    ``pattern(data)`` true: ``data`` names no one path (a shard pattern) and goes to ``fn`` as it is,
    which checks it."""

    def load(data: str | None, *, seed: int, **options: Any) -> TaskData:
        if data is None or pattern is None or not pattern(str(data)):
            data = require_data(task, data, what)
        return call_with_options(fn, task, options, seed=seed, **{arg: data})

    load.__doc__ = f"--task {task}: {what}"
    load.option_defaults = option_defaults(fn)  # type: ignore[attr-defined]
    return load
