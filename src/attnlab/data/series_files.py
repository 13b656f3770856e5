"""Reading time series from files: UCR TSV folders, ``.npz`` archives, and files of series to classify.

Formats and their checks are described in `attnlab.data.timeseries` (the task built on them): every
value must be a finite number and every row of one length, else a `DataError` names the file and line.
Shape: a UCR split is read as (N, T) float64, an ``.npz`` split and `read_series_file` as (N, C, T).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from attnlab.data.file_checks import data_float, load_numpy, not_utf8, npz_array
from attnlab.errors import DataError

__all__ = ["read_ucr_file", "read_series_file", "ucr_pair", "read_npz", "read_source"]


def _numbered(f: TextIO, path: Path) -> Iterator[tuple[int, str]]:
    """A text file's lines numbered from 1; a byte that is not UTF-8 is a DataError naming its line."""
    try:
        yield from enumerate(f, start=1)
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def _split_row(line: str) -> list[str]:
    if "\t" in line:
        return [t.strip() for t in line.split("\t")]
    if "," in line:
        return [t.strip() for t in line.split(",")]
    return line.split()


def _parse_values(tokens: list[str], path: Path, lineno: int, first_column: int) -> np.ndarray:
    values = np.empty(len(tokens), dtype=np.float64)
    for j, tok in enumerate(tokens):
        try:
            v = data_float(tok)
        except ValueError:
            raise DataError(f"{path}:{lineno}: column {j + first_column} holds {tok!r}, not a number") from None
        if not math.isfinite(v):
            what = "a missing value (NaN)" if math.isnan(v) else f"a non-finite value ({tok})"
            raise DataError(
                f"{path}:{lineno}: column {j + first_column} is {what}; fill or drop missing values first "
                "(variable-length UCR sets pad with NaN)"
            )
        values[j] = v
    return values


def _label_text(tok: str) -> str:
    """``"1.0000000e+00"`` -> ``"1"``; any other label keeps its spelling."""
    try:
        v = float(tok)
    except ValueError:
        return tok
    return str(int(v)) if math.isfinite(v) and v == int(v) else tok


def read_ucr_file(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read one UCR file: each line ``label<TAB>v1<TAB>v2...``; blank lines are skipped.

    Returns (values (N, T) float64, labels as strings). Raises `DataError` naming the file
    and line for text where a number belongs, NaN, or a row whose length differs.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"UCR file not found: {path}")
    rows: list[np.ndarray] = []
    labels: list[str] = []
    length, first_line = None, 0
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first label
        for lineno, line in _numbered(f, path):
            if not line.strip():
                continue
            tokens = _split_row(line.strip())
            if len(tokens) < 2:
                raise DataError(f"{path}:{lineno}: a row needs a label and at least one value, got {line.strip()[:60]!r}")
            values = _parse_values(tokens[1:], path, lineno, first_column=2)
            if length is None:
                length, first_line = len(values), lineno
            elif len(values) != length:
                raise DataError(
                    f"{path}:{lineno}: row has {len(values)} values but line {first_line} has {length} "
                    "(ragged rows; resample or pad variable-length series first)"
                )
            rows.append(values)
            labels.append(_label_text(tokens[0]))
    if not rows:
        raise DataError(f"{path} holds no series")
    return np.stack(rows), labels


def read_series_file(path: str | Path, length: int, channels: int = 1) -> tuple[np.ndarray, list[str | None], list[str]]:
    """Series to classify, for predict/explain: returns (x (N, C, T) float64, labels, names).

    Text (``.tsv``/``.csv``/``.txt``): one univariate series a line, values separated by
    tabs, commas or spaces. A line with ``length + 1`` values starts with its label (so a UCR
    ``_TEST.tsv`` works as is); with ``length`` values it is values only. ``.npy``: (T,),
    (N, T), or (N, C, T) for C channels. ``names`` identify each series: the path, plus
    ``:line`` or ``[row]`` when the file holds more than one.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"series file not found: {path}")
    if path.suffix.lower() == ".npy":
        arr = load_numpy(path, mmap_mode="r")  # memory-mapped: paged in from the file, not held beside its float64 copy
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
            raise DataError(f"{path}: expected a numeric array, got {getattr(arr, 'dtype', 'an .npz archive')}")
        if arr.ndim == 1 or (arr.ndim == 2 and channels > 1 and arr.shape == (channels, length)):
            arr = arr[None]
        if arr.ndim == 2:
            arr = arr[:, None, :]
        if arr.ndim != 3 or arr.shape[1:] != (channels, length):
            raise DataError(f"{path}: expected series of shape (T,), (N, T) or (N, C, T) with C={channels}, T={length}; got {arr.shape}")
        x = arr.astype(np.float64)
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            raise DataError(f"{path}: series {int(bad[0][0])} holds a NaN or infinite value")
        names = [str(path)] if len(x) == 1 else [f"{path}[{i}]" for i in range(len(x))]
        return x, [None] * len(x), names
    if channels != 1:
        raise DataError(f"{path}: this model takes {channels} channels; give an .npy of shape (N, {channels}, {length})")
    rows, labels, lines = [], [], []
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first value
        for lineno, line in _numbered(f, path):
            if not line.strip():
                continue
            tokens = _split_row(line.strip())
            if len(tokens) == length + 1:
                label, tokens, first = _label_text(tokens[0]), tokens[1:], 2
            elif len(tokens) == length:
                label, first = None, 1
            else:
                hint = next((f" (values are separated by tabs, commas or spaces, not {c!r})" for c in ";|" if c in line), "")
                raise DataError(f"{path}:{lineno}: {len(tokens)} values; the model takes series of {length} "
                                f"(optionally after a label){hint}")
            rows.append(_parse_values(tokens, path, lineno, first_column=first))
            labels.append(label)
            lines.append(lineno)
    if not rows:
        raise DataError(f"{path} holds no series")
    names = [str(path)] if len(rows) == 1 else [f"{path}:{n}" for n in lines]
    return np.stack(rows)[:, None, :], labels, names


def ucr_pair(root: Path) -> tuple[Path, Path]:
    def one(suffix: str) -> Path:
        found = sorted(p for p in root.iterdir() if p.is_file() and p.name.upper().endswith(suffix) and not p.name.startswith("."))
        if len(found) != 1:
            what = "none" if not found else ", ".join(p.name for p in found)
            raise DataError(f"{root}: expected exactly one *{suffix} file, found {what}")
        return found[0]

    return one("_TRAIN.TSV"), one("_TEST.TSV")


def read_npz(path: Path) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    z = load_numpy(path)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive of x_train, y_train, x_test, y_test")
    with z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing arrays {missing} (has {z.files}); expected x_train, y_train, x_test, y_test")
        arrays = {k: npz_array(path, z, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    out = []
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3 or x.dtype.kind not in "fiu" or len(x) != len(y) or y.ndim != 1:
            raise DataError(f"{path}: x_{split} must be numeric (N, C, T) or (N, T) with one label each; got x {x.shape} {x.dtype}, y {y.shape}")
        bad = np.argwhere(~np.isfinite(x.astype(np.float64)))
        if len(bad):
            raise DataError(f"{path}: x_{split}[{int(bad[0][0])}] holds a NaN or infinite value (channel {int(bad[0][1])}, step {int(bad[0][2])})")
        out += [x.astype(np.float64), [_label_text(str(v)) for v in y.tolist()]]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise DataError(f"{path}: x_train series are {out[0].shape[1:]} but x_test series are {out[2].shape[1:]}")
    return out[0], out[1], out[2], out[3]


def read_source(path: Path) -> tuple[np.ndarray, list[str], np.ndarray, list[str], str]:
    if path.is_dir():
        train_file, test_file = ucr_pair(path)
        x_train, y_train = read_ucr_file(train_file)
        x_test, y_test = read_ucr_file(test_file)
        if x_train.shape[1] != x_test.shape[1]:
            raise DataError(f"{train_file} has series of length {x_train.shape[1]} but {test_file} has {x_test.shape[1]}")
        return x_train[:, None], y_train, x_test[:, None], y_test, "ucr-tsv"
    if path.suffix.lower() == ".npz":
        return (*read_npz(path), "npz")
    raise DataError(f"{path}: expected a UCR folder (<Name>_TRAIN.tsv, <Name>_TEST.tsv) or an .npz")
