"""Missing values of a forecasting series filled split by split (attnlab.data.series_gaps)."""

from __future__ import annotations

import numpy as np
import pytest

from attnlab.data.forecasting import load_forecasting_task, split_borders
from attnlab.data.series_gaps import fill_missing
from attnlab.errors import DataError
from tests.data._series_files import series_csv as _csv


def _reference(column: np.ndarray, ends: list[int]) -> np.ndarray:
    """Float64, written out point by point: a missing row r of the split ending at ``end`` takes the
    line between the nearest known rows before r (any split) and after r (before ``end``); with no
    known row after it, the last known value; with none before it, the first known value after."""
    out = column.copy()
    known = ~np.isnan(column)
    start = 0
    for end in ends:
        for r in range(start, end):
            if known[r]:
                continue
            before = [i for i in range(r) if known[i] or i < start]
            after = [i for i in range(r + 1, end) if known[i]]
            if before and after:
                a, b = before[-1], after[0]
                out[r] = out[a] + (column[b] - out[a]) * (r - a) / (b - a)
            else:
                out[r] = out[before[-1]] if before else column[after[0]]
        start = end
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaps_are_filled_from_their_own_split_and_the_past_only(seed):
    rng = np.random.default_rng(seed)
    T = 60
    values = rng.normal(size=(T, 3))
    values[rng.random(size=(T, 3)) < 0.3] = np.nan
    values[20:25, 0] = np.nan  # a gap across the end of the training rows (row 21)
    values[1:3, 1] = values[0, 1]  # at least one known training value per column
    values[0, :] = rng.normal(size=3)
    ends = [21, 40, T]
    expected = np.stack([_reference(values[:, j], ends) for j in range(3)], axis=1)
    filled = values.copy()
    assert fill_missing(filled, ["a", "b", "c"], "s.csv", ends) == int(np.isnan(values).sum())
    np.testing.assert_allclose(filled, expected, rtol=0, atol=1e-12)
    later = values.copy()
    later[21:] = rng.normal(size=(T - 21, 3))  # other validation / test values: the training rows do not change
    again = later.copy()
    fill_missing(again, ["a", "b", "c"], "s.csv", ends)
    np.testing.assert_array_equal(again[:21], filled[:21])


def test_one_piece_is_plain_interpolation_and_a_column_without_training_values_is_refused():
    values = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, 3.0], [5.0, np.nan]])
    filled = values.copy()
    fill_missing(filled, ["a", "b"], "s.csv")
    np.testing.assert_allclose(filled, [[2.0, 1.0], [2.0, 2.0], [3.5, 3.0], [5.0, 3.0]])
    bad = np.array([[np.nan], [np.nan], [1.0]])
    with pytest.raises(DataError, match=r"s\.csv: column 'a' has no values in its training rows \(up to row 1\)"):
        fill_missing(bad, ["a"], "s.csv", [2, 3])
    with pytest.raises(DataError, match=r"s\.csv: column 'a' has no values at all"):
        fill_missing(np.full((3, 1), np.nan), ["a"], "s.csv")


def test_the_training_scaler_never_sees_validation_values_through_a_filled_gap(tmp_path):
    rng = np.random.default_rng(3)
    T, L, H = 200, 24, 8
    values = rng.normal(size=(T, 2))
    ends = split_borders(T, L, "ratio")[1]
    values[ends[0] - 3 : ends[0], 0] = np.nan  # the training rows end in a gap
    infos = []
    for first_val in (0.0, 1e3):  # the first validation value: interpolating across the border read it
        values[ends[0], 0] = first_val
        path = _csv(tmp_path / "s.csv", values, names=["a", "b"])
        infos.append(load_forecasting_task(str(path), seed=0, input_length=L, horizon=H, nan="interpolate").info)
    assert infos[0]["mean"] == infos[1]["mean"] and infos[0]["std"] == infos[1]["std"]
    assert infos[0]["filled_missing"] == 3
    train = values[: ends[0], 0].copy()
    train[-3:] = train[-4]  # the gap takes the last training value
    np.testing.assert_allclose(infos[0]["mean"][0], train.mean(), rtol=1e-12)
