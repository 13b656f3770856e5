"""Small forecasting series files for the data tests (`test_forecasting.py`, `test_forecast_files.py`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

__all__ = ["edit_lines", "series_csv"]


def series_csv(path: Path, values: np.ndarray, names=None, start_hour: int = 0) -> Path:
    """Hourly rows from 2021-01-01 00:00 (+ ``start_hour``): valid, strictly increasing ISO dates."""
    names = names or [f"x{i}" for i in range(values.shape[1])]
    lines = ["date," + ",".join(names)]
    for i, row in enumerate(values):
        stamp = datetime(2021, 1, 1) + timedelta(hours=start_hour + i)
        lines.append(f"{stamp:%Y-%m-%d %H:%M:%S}," + ",".join(repr(float(v)) for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def edit_lines(path: Path, edits: dict[int, str], insert: dict[int, str] | None = None) -> Path:
    """Replace lines (index 0 = the header) of a `series_csv` file, then insert lines before the given indices."""
    lines = path.read_text().splitlines()
    for index, text in edits.items():
        lines[index] = text
    for index, text in sorted((insert or {}).items(), reverse=True):
        lines.insert(index, text)
    path.write_text("\n".join(lines) + "\n")
    return path
