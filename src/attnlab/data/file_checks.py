"""Reading data files so that every failure is one `DataError` naming the file and the place.

Shared by the loaders that read NumPy arrays and text files (`attnlab.data.forecasting`,
`attnlab.data.timeseries`): numpy's own errors for a corrupt file are misleading (a file without
NumPy's magic is reported as "pickled (object) data"), and Python's UnicodeDecodeError counts its
offset from the decoder's last buffer, not from the file.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.errors import DataError

__all__ = ["data_float", "load_numpy", "not_utf8", "npz_array"]

_NUMPY_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)  # a bad header, zip or member


def data_float(text: Any) -> float:
    """``float(text)``, except that digit separators in a string are refused: Python reads "1_000"
    as 1000 (PEP 515), but a data file never means that. A ValueError for anything not a number."""
    if isinstance(text, str) and "_" in text:
        raise ValueError(f"could not convert string to float: {text!r}")
    return float(text)


def load_numpy(path: Path, mmap_mode: str | None = None) -> Any:
    """``np.load`` without pickles (an array or an open .npz), any failure one `DataError`; for a
    file numpy calls "pickled (object) data", its first bytes tell what is really wrong."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except _NUMPY_ERRORS as exc:
        if not isinstance(exc, OSError):  # (an OSError: the file itself cannot be read)
            with open(path, "rb") as file:
                head = file.read(6)
            if not head.startswith((b"\x93NUMPY", b"PK")):  # neither the .npy magic nor a zip header
                what = "it begins with neither NumPy's magic nor a zip header" if head else "it is empty"
                raise DataError(f"{path}: not a NumPy .npy/.npz file ({what})") from None
        raise DataError(f"{path}: cannot read as a NumPy file ({exc})") from None


def npz_array(path: Path, archive: Any, key: str) -> np.ndarray:
    """Array ``key`` of an open .npz: members are read lazily, so a corrupt one fails here."""
    try:
        a = archive[key]
    except _NUMPY_ERRORS as exc:
        raise DataError(f"{path}: cannot read array {key!r} ({exc})") from None
    if not isinstance(a, np.ndarray):  # a zip member that is not an .npy comes back as bytes
        raise DataError(f"{path}: {key!r} is not a NumPy array")
    return a


def not_utf8(path: Path) -> DataError:
    """The error for a text file that does not decode: the line and column of its first bad byte
    (the file is re-read: the decoder's offset counts from its last buffer, not the file)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):  # b"\n" never occurs inside a UTF-8 sequence
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(raw[: exc.start].decode("utf-8")) + 1
                return DataError(f"{path}: line {lineno}, column {column}: byte 0x{raw[exc.start]:02x} is not UTF-8; "
                                 "save the file as UTF-8")
    return DataError(f"{path}: not UTF-8 text; save the file as UTF-8")
