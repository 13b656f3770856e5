"""Multi-label images: a CSV of label columns (``--task images --data labels.csv --data.target multilabel``).

The CSV's header names one file column (``path``, ``file``, ``filename`` or ``image``; a
relative path is read from the CSV's folder) and one column per label; each row is one image,
its label columns 0 or 1 (the layout of CheXpert's and NUS-WIDE's label tables). The label
names are the column names, in file order. A label cell other than 0 / 1 (NaN and CheXpert's
-1 "uncertain" included), a row with no label set, a missing column or an unreadable image is
a `DataError` naming the file, the line and the value; so is a label column with no 1 in the
training split (a label the model would never see set). A finished run's CSV (evaluate another
file, ``--resume``) is read with the run's labels, in its output order, and its image spec: its
label columns must be the run's, in any order.

Pixels go through the same pipeline as a folder of class folders (`attnlab.data.images`):
RGB, bilinear resize, luma for one channel, /255, then the training split's per-channel
mean and std. Splits are drawn at random (a label set cannot be stratified by one class).

Large tables are read as class folders are (`attnlab.data.lazy_images`): the CSV is read once,
row by row, keeping only each row's path and its labels (one byte a cell); ``lazy`` keeps
only those and decodes each image when a batch asks for it (`ImageFileDataset`), so memory
does not grow with the number of images. The default (None) is lazy once the decoded float32
inputs would pass ``lazy_bytes``. Either way one pass decodes every image at start-up (colour
check, the training split's statistics from pixel histograms, unreadable files), and both
paths give the same tensors bit for bit.

Shape: items (C, H, W) float32 and a multi-hot target (K,) float32.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from attnlab.data.base import ImageSpec, TaskData, TensorPairDataset
from attnlab.data.images import fit_channel_stats, luma, scale_pixels
from attnlab.data.lazy_images import ImageFileDataset, scan_images
from attnlab.data.targets import check_trained, random_split
from attnlab.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["FILE_COLUMNS", "load_multilabel_csv", "read_label_table"]

FILE_COLUMNS = ("path", "file", "filename", "image")


def read_label_table(path: Path, run_names: list[str] | None = None) -> tuple[list[Path], list[str], np.ndarray, list[int]]:
    """(image files, label names, 0/1 matrix (N, K) float32, each row's line) of a label CSV; see the
    module docstring. A UTF-8 byte-order mark (spreadsheets write one) is skipped. ``run_names``: a
    finished run's labels, which the header's label columns must be (the matrix then in their order).

    The file is read row by row, never whole, and each label cell is kept as one byte until the
    end: a table of a million rows costs its paths and a million bytes a label, not a Python
    float per cell."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return _read_rows(path, csv.reader(f), run_names)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _read_rows(path: Path, reader, run_names: list[str] | None) -> tuple[list[Path], list[str], np.ndarray, list[int]]:
    """`read_label_table`'s rows, from a csv.reader over the open file."""
    header = [h.strip() for h in next(reader, [])]
    file_cols = [i for i, h in enumerate(header) if h.lower() in FILE_COLUMNS]
    if len(file_cols) != 1:
        raise DataError(f"{path}:1: the header needs exactly one file column ({'/'.join(FILE_COLUMNS)}), got {header}")
    fc = file_cols[0]
    names = [h for i, h in enumerate(header) if i != fc]
    if not names or not all(names):
        raise DataError(f"{path}:1: the header needs a named column per label beside {header[fc]!r}, got {header}")
    if len(set(names)) != len(names):
        raise DataError(f"{path}:1: label columns repeat a name: {names}")
    if run_names is not None:
        _check_run_columns(path, names, run_names)
    files, cells, lines = [], bytearray(), []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} cells for {len(header)} columns")
        values = bytearray()
        for i, cell in enumerate(row):
            if i == fc:
                continue
            if cell.strip() not in ("0", "1"):
                raise DataError(f"{path}:{line}: label column {header[i]!r} holds {cell!r}; label columns hold 0 or 1")
            values.append(cell.strip() == "1")
        if not any(values):
            raise DataError(f"{path}:{line}: empty label set (no label column is 1) for {row[fc]!r}")
        files.append(Path(row[fc].strip()) if Path(row[fc].strip()).is_absolute() else path.parent / row[fc].strip())
        cells += values
        lines.append(line)
    if not files:
        raise DataError(f"{path}: no image rows below the header")
    y = np.frombuffer(bytes(cells), dtype=np.uint8).reshape(len(files), len(names)).astype(np.float32)
    if run_names is not None:
        names, y = list(run_names), y[:, [names.index(n) for n in run_names]]
    return files, names, y, lines


def _check_run_columns(path: Path, names: list[str], run_names: list[str]) -> None:
    """The header's label columns are a finished run's labels (in any order)."""
    extra = [n for n in names if n not in run_names]
    if extra:
        raise DataError(f"{path}:1: label column {extra[0]!r} is not one of the run's {len(run_names)} labels {run_names}")
    missing = [n for n in run_names if n not in names]
    if missing:
        raise DataError(f"{path}:1: no column for the run's label {missing[0]!r} (its labels: {run_names}); "
                        "a label left out would be scored as never set")


def load_multilabel_csv(
    path: str | Path, *, image_size: tuple[int, int] = (32, 32), channels: int | None = None, seed: int = 0,
    val_fraction: float = 0.1, test_fraction: float = 0.1, class_names: list[str] | None = None, spec: dict | None = None,
    lazy: bool | None = None, skip_bad: bool = False, lazy_bytes: int = 1 << 30, norm_stats: dict | None = None,
) -> TaskData:
    """The images of a label CSV as a multi-label "images" task (`TaskData.target` "multilabel").
    ``class_names`` / ``spec``: a finished run's labels and image spec (see the module docstring).
    ``norm_stats``: a pretrained checkpoint's normalisation instead of the train split's (`fit_channel_stats`).

    ``skip_bad``: a row whose image is unreadable is logged and left out (listed in
    ``info["skipped_files"]``) instead of stopping with its name; the split is drawn over all
    rows first, so no other row changes split. ``lazy``: keep only paths and labels and decode
    each image on access (`ImageFileDataset`); None decides by size, lazy once the decoded
    float32 inputs would pass ``lazy_bytes`` (`attnlab.data.vision.LAZY_BYTES`).
    """
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1, 3 or None (auto), got {channels!r}")
    height, width = (int(s) for s in image_size)
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".csv":
        raise DataError(f"{path}: --data.target multilabel reads a .csv of label columns (path,<label>,<label>...)")
    files, names, y, lines = read_label_table(path, None if class_names is None else [str(n) for n in class_names])
    never = [n for j, n in enumerate(names) if not y[:, j].any()]
    if never and class_names is None:  # before any image is decoded
        raise DataError(f"{path}: label column {never[0]!r} is 0 in every row; a label needs examples")
    parts = random_split(len(files), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    if lazy is None:  # decoded float32 inputs past the budget: decode on access instead
        lazy = len(files) * 3 * height * width * 4 > lazy_bytes
    in_train = np.zeros(len(files), bool)
    in_train[parts[0]] = True
    any_color, hist, bad, rgb = scan_images(files, in_train, (height, width), skip_bad=skip_bad, keep=not lazy)
    if bad:  # the split is of the listed rows, so dropping a bad one moves no other row between splits
        parts = [p[~np.isin(p, bad)] for p in parts]
        lost = [n for j, n in enumerate(names) if not y[parts[0], j].any()]
        if class_names is None and (not len(parts[0]) or lost):
            what = f"label {lost[0]!r} has" if lost else "there are"
            raise DataError(f"{path}: {what} no training images left after skipping {len(bad)} unreadable file(s) "
                            f"(e.g. {files[bad[0]]}, line {lines[bad[0]]})")
    if class_names is None:  # a label never set in training: its output would only ever learn "no"
        sets = {split: [[n for n, v in zip(names, y[i]) if v] for i in part.tolist()]
                for split, part in zip(("train", "val", "test"), parts)}
        at = {split: [lines[i] for i in part.tolist()] for split, part in zip(("train", "val", "test"), parts)}
        check_trained("multilabel", path, sets, at, cut_splits=("val", "test"), seed=seed)
    channels = channels or (3 if any_color else 1)
    mean, std = (hist.stats(channels) if norm_stats is None else fit_channel_stats(norm_stats, channels)) \
        if spec is None else (spec["mean"], spec["std"])
    spec = ImageSpec(channels=channels, height=height, width=width, mean=mean, std=std, pixel_max=255.0)
    splits = [torch.from_numpy(np.asarray(p, dtype=np.int64)) for p in parts]
    if lazy:
        train, val, test = (ImageFileDataset([files[i] for i in p.tolist()], y[p], spec, indices=i, float_targets=True)
                            for p, i in zip(parts, splits))
    else:
        pixels = luma(rgb) if channels == 1 else rgb  # (N, H, W, C) uint8
        x, targets = spec.normalise(scale_pixels(np.moveaxis(pixels, -1, 1), 255.0)), torch.from_numpy(y)  # (N, C, H, W), (N, K)
        train, val, test = (TensorPairDataset(x[i], targets[i], indices=i, float_targets=True) for i in splits)
    data = TaskData("images", train, val, test, num_classes=len(names), class_names=names, input_shape=spec.shape,
                    spec=spec, target="multilabel", metric="map",
                    info={"target": "multilabel", "source": str(path), "skipped_files": [str(files[i]) for i in bad]})
    if lazy:
        logger.info("multi-label images (decoded on access): %s", data.summary())
    return data
