"""The MNIST format: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (Keras'
``mnist.npz`` layout), as an "mnist" task: the file's test split kept, a validation split
drawn from training by seed, labels as output indices, normalised with MNIST's mean and std
(or a pretrained checkpoint's).

Shape: images (N, 1, H, W) float32, labels (N,) int64.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from attnlab.data.base import ImageSpec, TaskData
from attnlab.data.images import fit_channel_stats, scale_pixels
from attnlab.data.vision import RandomShift, _task_data
from attnlab.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["MNIST_MEAN", "MNIST_STD", "load_mnist_task"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        if not (path / "mnist.npz").is_file():
            raise DataError(f"{path} is a folder without mnist.npz; pass the .npz file itself")
        path = path / "mnist.npz"
    if not path.exists():
        raise DataError(f"MNIST file not found: {path}")
    return path


def _check_split(path: Path, x: np.ndarray, y: np.ndarray, split: str) -> np.ndarray:
    """Validate one (x_split, y_split) pair; returns x as (N, H, W)."""
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise DataError(f"{path}: x_{split} must have shape (N, H, W), got {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y_{split} must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}")
    if len(x) != len(y):
        raise DataError(f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: y_{split} has negative labels")
    return x


def load_mnist_task(path: str | Path, *, seed: int = 0, val_size: int = 5000, augment: bool = True,
                    class_names: Sequence[str] | None = None, spec: dict | None = None,
                    norm_stats: dict | None = None) -> TaskData:
    """MNIST-format ``.npz`` (keys x_train, y_train, x_test, y_test; uint8 images (N, 28, 28)).

    ``path`` may also be a folder holding ``mnist.npz``. The first ``val_size`` items of a
    ``seed``-driven permutation of the train split become validation. Pixels /255, then
    normalised with the usual MNIST mean 0.1307 and std 0.3081, or ``norm_stats`` (a pretrained
    checkpoint's, `fit_channel_stats`); float arrays must already lie in [0, 1]. ``augment``:
    random shifts of up to 2 pixels as `TaskData.batch_augment`.

    ``class_names`` and ``spec`` (a finished run's, carried by evaluate and ``--resume``): the
    file must fit the run, a label past its classes or images of another size are refused by
    name, and pixels are normalised with the spec's mean and std.
    """
    file = _npz_file(path)
    if not zipfile.is_zipfile(file):  # else np.load guesses "pickle" and says so, confusingly
        raise DataError(f"{file} is not an .npz archive (expected keys {', '.join(_MNIST_KEYS)})")
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in _MNIST_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{file} is missing keys {missing} (has {sorted(npz.files)})")
            arrays = {k: npz[k] for k in _MNIST_KEYS}
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {file} as an .npz archive: {e}") from None
    x_train = _check_split(file, arrays["x_train"], arrays["y_train"], "train")
    x_test = _check_split(file, arrays["x_test"], arrays["y_test"], "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{file}: train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}")
    if x_train.dtype != x_test.dtype:
        raise DataError(f"{file}: x_train is {x_train.dtype} but x_test is {x_test.dtype}")
    pixel_max = 255.0 if np.issubdtype(x_train.dtype, np.integer) else 1.0
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.size and (x.min() < 0 or x.max() > pixel_max):
            raise DataError(f"{file}: {name} values lie in [{x.min()}, {x.max()}], expected [0, {pixel_max:g}]")
    if spec is not None and tuple(x_train.shape[1:]) != (spec["height"], spec["width"]):
        raise DataError(f"{file}: images are {x_train.shape[1]}x{x_train.shape[2]} but the run was trained on "
                        f"{spec['height']}x{spec['width']}")
    for split in ("train", "test") if class_names is not None else ():
        y = arrays[f"y_{split}"]
        if len(y) and y.max() >= len(class_names):
            i = int(np.argmax(y >= len(class_names)))
            raise DataError(f"{file}: y_{split}[{i}] is {y[i]}, past the run's {len(class_names)} classes "
                            f"(labels 0..{len(class_names) - 1})")
    n_train = len(x_train)
    if not 0 <= val_size < n_train:
        raise DataError(f"{file}: val_size={val_size} must be in [0, {n_train}) (x_train has {n_train} images)")

    perm = np.random.default_rng(seed).permutation(n_train)
    train_idx, val_idx = np.sort(perm[val_size:]), np.sort(perm[:val_size])
    if class_names is None:  # a finished run's training is what counts
        _check_trained_classes(file, arrays["y_train"], train_idx, {"validation": arrays["y_train"][val_idx],
                                                                    "test": arrays["y_test"]}, seed=seed)
    H, W = x_train.shape[1:]
    mean, std = (([MNIST_MEAN], [MNIST_STD]) if norm_stats is None else fit_channel_stats(norm_stats, 1)) \
        if spec is None else (spec["mean"], spec["std"])
    spec = ImageSpec(channels=1, height=H, width=W, mean=mean, std=std, pixel_max=pixel_max)
    x_all = np.concatenate([x_train, x_test])[:, None]  # (N, 1, H, W)
    y_all = torch.from_numpy(np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(np.int64))
    splits = [torch.from_numpy(i) for i in (train_idx, val_idx, np.arange(n_train, len(y_all)))]
    num_classes = int(y_all.max()) + 1 if len(y_all) else 0
    if class_names is None:
        _warn_empty_labels(file, y_all.numpy(), num_classes)
    names = [str(c) for c in range(num_classes)] if class_names is None else [str(c) for c in class_names]
    shift = RandomShift(2, fill=spec.fill_value()) if augment else None
    x = spec.normalise(scale_pixels(x_all, pixel_max))
    return _task_data("mnist", x, y_all, splits, names, spec, shift)


def _warn_empty_labels(file: Path, y: np.ndarray, num_classes: int) -> None:
    """Warn, once, of labels in 0..num_classes-1 that no example has. They keep their outputs
    (labels are output indices, as torch's cross-entropy and timm's ``num_classes`` read them:
    renumbering would rename the classes a saved model predicts, and refusing would stop a run
    that leaves a digit out on purpose), but a gap is often a mistake, 1-based labels above all."""
    empty = np.flatnonzero(np.bincount(y, minlength=num_classes) == 0).tolist()
    if not empty:
        return
    shown = f"label {empty[0]} has" if len(empty) == 1 else f"labels {empty[:10]}{' ...' if len(empty) > 10 else ''} have"
    hint = "; labels start at 1? they are output indices, counted from 0" if empty == [0] else ""
    logger.warning("%s: %s no example in y_train or y_test; the run keeps an output for each of the %d labels "
                   "0..%d%s", file, shown, num_classes, num_classes - 1, hint)


def _check_trained_classes(file: Path, y_train: np.ndarray, train_idx: np.ndarray, held_out: dict[str, np.ndarray], *,
                           seed: int) -> None:
    """Refuse labels of a held-out split (validation: cut from ``y_train`` by ``seed``; test) that
    the training split (``y_train[train_idx]``) never has, naming them: the model would be scored
    on classes it never saw, and num_classes, counting every label up to the largest, says nothing."""
    known, in_file = set(y_train[train_idx].tolist()), set(y_train.tolist())
    for split, y in held_out.items():
        unseen = sorted(set(y.tolist()) - known)
        if unseen:
            why = ("y_train has none of them" if not in_file & set(unseen)
                   else f"every y_train example of them went to validation: --seed {seed}, --data.val_size")
            raise DataError(f"{file}: {split} label(s) {unseen} never occur in the training split ({why}); "
                            "a class needs training examples")
