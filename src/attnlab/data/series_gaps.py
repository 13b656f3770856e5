"""Missing values in a forecasting series: refused, or filled linearly in time without leaking the future.

``--data.nan interpolate`` fills each gap by linear interpolation between its neighbours, as
pandas' ``Series.interpolate(method="index")`` does. A gap is filled from values of its own
split and the splits before it, never from a later split: a gap at the end of the training
rows takes the last training value, not a line drawn to the first validation value, so
neither the model nor the training-only scaler sees validation or test values. (Inside one
split a gap is still filled from both sides, as interpolation does.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from attnlab.errors import DataError

__all__ = ["fill_missing"]


def fill_missing(values: np.ndarray, names: Sequence[str], source: str, ends: Sequence[int] | None = None,
                 where: Callable[[int], str] = lambda r: f"row {r}") -> int:
    """Fill the NaNs of ``values`` (T, C) in place; returns how many were filled.

    ``ends``: the row where each split ends (train, val, test, ...); rows ``[a, b)`` of a split
    are filled from the known values in rows ``[0, b)``, so nothing after the split is read.
    None: the whole series is one piece. Before a channel's first value (in its first piece)
    the nearest value is repeated; a piece ending in a gap repeats its last known value. A
    channel with no value in its first piece is refused by name (``where(row)`` says where the
    piece ends, as the user sees rows).
    """
    T = len(values)
    bounds = sorted({min(int(e), T) for e in (ends or ())} | {T})
    missing = np.isnan(values)
    count = int(missing.sum())
    if not count:
        return 0
    t = np.arange(T)
    for j in range(values.shape[1]):
        if not missing[:, j].any():
            continue
        start = 0
        for end in bounds:
            if end <= start:
                continue
            gap = missing[start:end, j]
            if gap.any():
                known = ~missing[:end, j]
                known[:start] = True  # earlier pieces are filled by now
                if not known.any():
                    rows_ = "at all" if end == T else f"in its training rows (up to {where(end - 1)})"
                    raise DataError(f"{source}: column {names[j]!r} has no values {rows_}")
                rows = t[start:end][gap]
                values[rows, j] = np.interp(rows, t[:end][known], values[:end, j][known])
            start = end
    return count
