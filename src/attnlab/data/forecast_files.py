"""Reading a forecasting series file: a CSV of dated rows or an ``.npy`` / ``.npz`` array, as a `Series`.

Files: a UTF-8 CSV with a header of distinct, non-empty names, a date column (``date_column``,
default ``date``) of ISO 8601 dates (``datetime.fromisoformat``; or ``strptime`` with ``date_format``),
strictly increasing, and numeric
channels; or an ``.npy`` / ``.npz`` array of shape (T, C) (or (T,)), which has no dates. Only a
blank line is skipped: a row of empty cells is a time step. Empty cells and ``nan`` are missing
values: refused by default, or filled by linear interpolation in time (``nan="interpolate"``, each
split from itself and the splits before it: `attnlab.data.series_gaps`; the count is kept). Every refusal is one line naming the file, line and column.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.config import check_choice
from attnlab.data.file_checks import data_float, load_numpy, not_utf8, npz_array
from attnlab.data.forecast_dates import to_datetime
from attnlab.data.series_gaps import fill_missing
from attnlab.errors import DataError

__all__ = ["NAN_POLICIES", "Series", "fill_series", "keep_columns", "read_series", "row_place"]

logger = logging.getLogger(__name__)

NAN_POLICIES = ("refuse", "interpolate")


@dataclass
class Series:
    """A read series: values (T, C) float64, channel names, ISO date strings (or None), source;
    ``lines``: each row's line in a CSV (None for arrays); ``filled``: missing values interpolated."""

    values: np.ndarray
    names: list[str]
    dates: list[str] | None
    source: str
    lines: list[int] | None = None
    filled: int = 0


def _parse_float(text: str) -> float:
    t = text.strip()
    if t == "" or t.lower() in ("nan", "na", "n/a", "null"):
        return math.nan
    return data_float(t)  # ValueError for non-numbers


def _check_header(path: Path, header: list[str]) -> None:
    """Names must be distinct and non-empty: a repeated one hides a channel behind the first."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            hint = " (a pandas index? save with to_csv(index=False))" if i == 1 else ""
            raise DataError(f"{path}: line 1, column {i}: empty column name{hint}")
        if name in seen:
            raise DataError(f"{path}: line 1: column name {name!r} appears twice (columns {seen[name]} and {i}); rename one")
        seen[name] = i


def _parse_date(where: str, text: str, previous: tuple[datetime, str, int] | None,
                date_format: str | None = None) -> datetime:
    """A date strictly after the previous row's (``previous``: its value, text and line)."""
    if not text:
        raise DataError(f"{where}: empty date (a row of empty cells is still a time step; delete it if it is not one)")
    try:
        stamp = to_datetime(text, date_format)
    except ValueError:
        if date_format is not None:
            raise DataError(f"{where}: {text!r} does not match --data.date_format {date_format!r}") from None
        raise DataError(f"{where}: {text!r} is not an ISO 8601 date (YYYY-MM-DD, or YYYY-MM-DD HH:MM[:SS]; "
                        "other formats: --data.date_format, e.g. '%Y/%m/%d %H:%M')") from None
    if previous is not None:
        last, before, line = previous
        try:
            later = stamp > last
        except TypeError:  # naive vs aware: Python refuses to order them
            raise DataError(f"{where}: {text!r} and line {line}'s {before!r} mix dates with and without a time zone") from None
        if not later:
            raise DataError(f"{where}: {text!r} is not after line {line}'s {before!r}; dates must be strictly increasing")
    return stamp


def _read_csv(path: Path, date_column: str, date_format: str | None = None) -> Series:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _parse_csv(path, csv.reader(f), date_column, date_format)
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def _parse_csv(path: Path, rows: Any, date_column: str, date_format: str | None) -> Series:
    try:
        header = [h.strip() for h in next(rows)]
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    _check_header(path, header)
    lowered = [h.lower() for h in header]
    if date_column.lower() not in lowered:
        raise DataError(f"{path}: line 1: no date column {date_column!r} in the header {header} "
                        f"(set --data.date_column, or give an .npy/.npz of shape (T, C) for a series without dates)")
    d = lowered.index(date_column.lower())
    channels = [i for i in range(len(header)) if i != d]
    if not channels:
        raise DataError(f"{path}: line 1: no numeric channel besides the date column")
    dates: list[str] = []
    lines: list[int] = []
    values: list[list[float]] = []
    previous = None
    line = rows.line_num + 1  # a row's first line (a quoted cell may span several)
    for row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):  # a blank line; ",,," is a row of missing values
            line = rows.line_num + 1
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: line {line}: {len(row)} cells, the header has {len(header)}")
        date = row[d].strip()
        previous = (_parse_date(f"{path}: line {line}, column {header[d]!r}", date, previous, date_format), date, line)
        out = []
        for i in channels:
            try:
                out.append(_parse_float(row[i]))
            except ValueError:
                raise DataError(f"{path}: line {line}, column {header[i]!r}: {row[i]!r} is not a number") from None
        values.append(out)
        dates.append(date)
        lines.append(line)
        line = rows.line_num + 1
    if not values:
        raise DataError(f"{path}: no data rows after the header")
    return Series(np.asarray(values, dtype=np.float64), [header[i] for i in channels], dates, str(path), lines)


def _read_array(path: Path) -> Series:
    # .npy: memory-mapped, so the raw array is paged in from the file rather than held beside
    # its float64 copy (an .npz ignores mmap_mode: its members are read whole)
    a = load_numpy(path, mmap_mode="r")
    if isinstance(a, np.lib.npyio.NpzFile):
        with a as archive:
            keys = list(archive.keys())
            key = next((k for k in ("data", "x", "series", "values") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(f"{path}: an .npz needs one array, or one named 'data', got {keys}")
            a = npz_array(path, archive, key)
    if a.dtype.kind not in "fiub":
        raise DataError(f"{path}: the array holds {a.dtype}, not numbers")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"{path}: expected an array of shape (T, C), got {a.shape}")
    return Series(a.astype(np.float64), [f"c{i}" for i in range(a.shape[1])], None, str(path))


def read_series(path: str | Path, *, date_column: str = "date", nan: str = "refuse", date_format: str | None = None,
                columns: Sequence[str] | None = None, fill: bool = True) -> Series:
    """Read a CSV (date column + numeric channels) or an .npy / .npz (T, C) into a `Series`.

    Missing values are refused with the first one's row and column, or (``nan="interpolate"``)
    filled linearly in time per channel, the ends with the nearest value. ``columns``: keep only
    these channels, in this order (a finished run's inputs), before missing values are looked
    for; one the file lacks is refused by name. ``fill=False`` leaves the NaNs that ``nan="interpolate"``
    allows for `fill_series` (the caller knows the split borders).
    """
    check_choice("data", "nan", nan, NAN_POLICIES)
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a series file; give one .csv, .npy or .npz file")
    if not path.is_file():
        raise DataError(f"series file not found: {path}")
    series = _read_array(path) if path.suffix.lower() in (".npy", ".npz") else _read_csv(path, date_column, date_format)
    if columns is not None:
        keep_columns(series, columns)
    v = series.values
    if np.isinf(v).any():
        r, c = map(int, np.argwhere(np.isinf(v))[0])
        raise DataError(f"{path}: {row_place(series, r)}, column {series.names[c]!r}: infinite value")
    missing = np.isnan(v)
    if missing.any() and nan == "refuse":
        r, c = map(int, np.argwhere(missing)[0])
        raise DataError(f"{path}: {row_place(series, r)}, column {series.names[c]!r}: missing value (NaN); "
                        f"{int(missing.sum())} in all (train with --data.nan interpolate to fill them linearly in time)")
    if fill:
        fill_series(series)
    return series


def fill_series(series: Series, ends: Sequence[int] | None = None) -> None:
    """Fill a series' missing values in place (`series_gaps.fill_missing`: ``ends``, the splits'
    end rows, keep each split's gaps from being filled with a later split's values)."""
    series.filled = fill_missing(series.values, series.names, series.source, ends, lambda r: row_place(series, r))
    if series.filled:
        logger.warning("%s: %d missing value(s) filled by linear interpolation", series.source, series.filled)


def keep_columns(series: Series, columns: Sequence[str]) -> None:
    """Keep only ``columns`` of a series, in that order (a finished run's inputs); one it lacks is refused."""
    missing = [str(n) for n in columns if str(n) not in series.names]
    if missing:
        raise DataError(f"{series.source}: no column(s) {missing}; the run was trained on {list(columns)} "
                        f"(the file has {series.names})")
    series.values = series.values[:, [series.names.index(str(n)) for n in columns]]
    series.names = [str(n) for n in columns]


def row_place(series: Series, row: int) -> str:
    """A data row as the user sees it: its CSV line (blank lines counted) or the array row."""
    return f"line {series.lines[row]}" if series.lines is not None else f"row {row}"
