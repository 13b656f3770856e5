"""Forecasting data: the Informer / DLinear / PatchTST split, the train-only scaler, windows, bad input
(reading the series file itself: `test_forecast_files.py`)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from attnlab.data.forecasting import (
    future_dates,
    load_forecasting_task,
    read_series,
    split_borders,
)
from attnlab.errors import ConfigError, DataError
from tests.conftest import DATA_DIR
from tests.data._series_files import edit_lines, series_csv

ETTH1 = DATA_DIR / "ett" / "ETTh1.csv"


@pytest.mark.skipif(not ETTH1.exists(), reason="shared ETTh1 not found")
def test_etth1_follows_the_informer_split_and_fits_the_scaler_on_train_rows_only():
    data = load_forecasting_task(str(ETTH1), seed=0, input_length=336, horizon=96)
    assert (len(data.train), len(data.val), len(data.test)) == (8209, 2785, 2785)  # the papers' logged sizes
    raw = np.loadtxt(ETTH1, delimiter=",", skiprows=1, usecols=range(1, 8))  # (17420, 7) float64, an independent reader
    mean, std = raw[:8640].mean(0), raw[:8640].std(0)
    np.testing.assert_allclose(data.info["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(data.info["std"], std, rtol=1e-12)
    x, y = data.test[0]  # the first test forecast starts at the border, row 11520
    np.testing.assert_allclose(x.numpy(), ((raw[11520 - 336:11520] - mean) / std).T, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), ((raw[11520:11520 + 96] - mean) / std).T, atol=1e-5)
    x, y = data.test[len(data.test) - 1]  # and the last one ends at row 14400: rows beyond it are unused
    np.testing.assert_allclose(y.numpy()[:, -1], (raw[14399] - mean) / std, atol=1e-5)
    assert data.info["channels"][-1] == "OT" and data.input_shape == (7, 336)


def test_ratio_split_matches_dataset_custom(tmp_path):
    T, L, H = 500, 48, 12
    values = np.random.default_rng(0).normal(size=(T, 3)).cumsum(0)
    data = load_forecasting_task(str(series_csv(tmp_path / "s.csv", values)), seed=0, input_length=L, horizon=H)
    n_train, n_test = int(T * 0.7), int(T * 0.2)  # Dataset_Custom
    starts = [0, n_train - L, T - n_test - L]
    ends = [n_train, T - n_test, T]
    assert split_borders(T, L, "ratio") == (starts, ends)
    assert [len(s) for s in (data.train, data.val, data.test)] == [e - s - L - H + 1 for s, e in zip(starts, ends)]
    mean, std = values[:n_train].mean(0), values[:n_train].std(0)
    x, y = data.val[3]
    a = starts[1] + 3
    np.testing.assert_allclose(x.numpy(), ((values[a:a + L] - mean) / std).T, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), ((values[a + L:a + L + H] - mean) / std).T, atol=1e-5)


def test_features_and_target_channel(tmp_path):
    values = np.random.default_rng(1).normal(size=(400, 3))
    path = series_csv(tmp_path / "s.csv", values, names=["a", "b", "c"])
    ms = load_forecasting_task(str(path), seed=0, input_length=32, horizon=8, features="MS", target="a")
    x, y = ms.train[0]
    assert x.shape == (3, 32) and y.shape == (1, 8)
    assert ms.info["channels"] == ["b", "c", "a"]  # the target moves last, as Dataset_Custom
    np.testing.assert_allclose(y[0].numpy(), x.new_tensor(0).numpy() + ms.train.targets[0, 32:40].numpy())
    mean_a, std_a = values[:280, 0].mean(), values[:280, 0].std()
    np.testing.assert_allclose(y[0].numpy(), (values[32:40, 0] - mean_a) / std_a, atol=1e-5)
    s = load_forecasting_task(str(path), seed=0, input_length=32, horizon=8, features="S", target="b")
    x, y = s.train[0]
    assert x.shape == (1, 32) and y.shape == (1, 8) and s.info["channels"] == ["b"]
    with pytest.raises(ConfigError, match="'z' is not a channel"):
        load_forecasting_task(str(path), seed=0, input_length=32, horizon=8, target="z")
    with pytest.raises(ConfigError, match="features"):
        load_forecasting_task(str(path), seed=0, features="X")


@pytest.mark.parametrize("case", ["text", "no-date", "short", "ragged"])
def test_bad_files_name_file_line_and_column(tmp_path, case):
    values = np.random.default_rng(3).normal(size=(60, 2))
    path = series_csv(tmp_path / "s.csv", values, names=["a", "b"])
    lines = path.read_text().splitlines()
    if case == "text":
        lines[7] = lines[7].rsplit(",", 1)[0] + ",oops"
        expected = r"s.csv: line 8, column 'b': 'oops' is not a number"
    elif case == "no-date":
        lines[0] = "time,a,b"
        expected = r"s.csv: line 1: no date column 'date'"
    elif case == "short":
        expected = r"s.csv: 60 rows, shorter than input_length \+ horizon = 48 \+ 24 = 72"
    else:
        lines[4] += ",1.0"
        expected = r"s.csv: line 5: 4 cells, the header has 3"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=expected):
        load_forecasting_task(str(path), seed=0, input_length=48, horizon=24)


def test_ett_split_needs_twenty_months(tmp_path):
    path = series_csv(tmp_path / "ETTh1.csv", np.zeros((1000, 2)))
    with pytest.raises(DataError, match="ETT split needs 14400"):
        load_forecasting_task(str(path), seed=0, input_length=48, horizon=24)
    assert len(load_forecasting_task(str(path), seed=0, input_length=48, horizon=24, split="ratio").train) > 0


def test_future_dates_continue_the_spacing():
    assert future_dates(["2020-01-01 22:00:00", "2020-01-01 23:00:00"], 2) == ["2020-01-02 00:00:00", "2020-01-02 01:00:00"]
    assert future_dates(["2020-01-30", "2020-01-31"], 1) == ["2020-02-01"]
    assert future_dates(["a", "b"], 3) is None
    assert future_dates(["2020-01-01T23:00+02:00", "2020-01-02T00:00+02:00"], 1) == ["2020-01-02T01:00:00+02:00"]  # as written


def test_generated_default_is_deterministic():
    a = load_forecasting_task(None, seed=0)
    b = load_forecasting_task(None, seed=5)
    torch.testing.assert_close(a.test[0][0], b.test[0][0])
    assert a.input_shape == (4, 336) and len(a.test) > 0


def test_other_date_formats_through_date_format(tmp_path):
    """--data.date_format: strptime's format, checked on every row; forecasts continue in it."""
    path = tmp_path / "s.csv"
    path.write_text("date,a\n" + "".join(f"1990/1/{d} 0:00,{d}\n" for d in range(1, 31)))
    with pytest.raises(DataError, match=r"line 2, column 'date': '1990/1/1 0:00' is not an ISO 8601 date .*--data.date_format"):
        read_series(path)
    series = read_series(path, date_format="%Y/%m/%d %H:%M")
    assert series.dates[0] == "1990/1/1 0:00" and len(series.values) == 30
    assert future_dates(series.dates, 2, "%Y/%m/%d %H:%M") == ["1990/01/31 00:00", "1990/02/01 00:00"]
    path.write_text("date,a\n1990/1/1 0:00,1\n1990-01-02,2\n")
    with pytest.raises(DataError, match=r"line 3, column 'date': '1990-01-02' does not match --data.date_format '%Y/%m/%d %H:%M'"):
        read_series(path, date_format="%Y/%m/%d %H:%M")
    with pytest.raises(ConfigError, match=r"--data.date_format must be a strptime format"):
        load_forecasting_task(str(path), seed=0, date_format="YYYY/MM/DD")


def test_the_filled_count_is_kept_in_the_run_info(tmp_path):
    values = np.random.default_rng(4).normal(size=(200, 2))
    path = edit_lines(series_csv(tmp_path / "s.csv", values, names=["a", "b"]), {10: "2021-01-01 09:00:00,,", 20: "2021-01-01 19:00:00,nan,1"})
    data = load_forecasting_task(str(path), seed=0, input_length=24, horizon=8, nan="interpolate")
    assert data.info["filled_missing"] == 3
    assert load_forecasting_task(None, seed=0, input_length=24, horizon=8).info["filled_missing"] == 0


def test_future_dates_of_monthly_and_yearly_series_keep_to_the_calendar():
    """A monthly series continues on the 1st (a median gap of 31 days drifted to the 2nd, 3rd...)."""
    monthly = [f"{2018 + i // 12}-{i % 12 + 1:02d}-01" for i in range(40)]
    assert future_dates(monthly, 3) == ["2021-05-01", "2021-06-01", "2021-07-01"]
    ends = ["2020-01-31", "2020-02-29", "2020-03-31", "2020-04-30", "2020-05-31", "2020-06-30"]
    assert future_dates(ends, 3) == ["2020-07-31", "2020-08-31", "2020-09-30"]
    quarters = ["2020-01-15 12:00:00", "2020-04-15 12:00:00", "2020-07-15 12:00:00"]
    assert future_dates(quarters, 2) == ["2020-10-15 12:00:00", "2021-01-15 12:00:00"]
    yearly = [f"{2000 + i}-01-01" for i in range(30)]
    assert future_dates(yearly, 4) == ["2030-01-01", "2031-01-01", "2032-01-01", "2033-01-01"]
    assert future_dates(["2020/01/01", "2020/02/01"], 1, "%Y/%m/%d") == ["2020/03/01"]
    assert future_dates(["2020-01-31", "2020-02-01"], 1) == ["2020-02-02"]  # daily, across a month's end


@pytest.mark.parametrize("row, channel", [(10, 1), (90, 0)])  # a training row (std overflows), a test row (float32 does)
def test_values_the_scaler_cannot_hold_are_refused_by_line_and_column(tmp_path, row, channel):
    values = np.random.default_rng(0).standard_normal((100, 2))
    values[row, channel] = 1e300  # the training rows' std overflowed to inf: the channel became zeros, silently
    path = series_csv(tmp_path / "big.csv", values, names=["a", "b"])
    with pytest.raises(DataError, match=rf"big.csv: line {row + 2}, column '{'ab'[channel]}': 1e\+300 is too large"):
        load_forecasting_task(str(path), seed=0, input_length=8, horizon=4, split="ratio")


def test_future_dates_of_a_business_day_series_skip_weekends():
    """Trading days (no Saturday or Sunday rows) continue on weekdays, as pandas' BDay; a daily
    series with weekends, or a business-day series written with times, keeps its spacing."""
    days = [d for d in (datetime(2024, 2, 1) + timedelta(days=i) for i in range(29)) if d.weekday() < 5]
    history = [f"{d:%Y-%m-%d}" for d in days]  # ends Thursday 2024-02-29
    assert future_dates(history, 4) == ["2024-03-01", "2024-03-04", "2024-03-05", "2024-03-06"]
    pandas = pytest.importorskip("pandas")
    expected = [f"{d:%Y-%m-%d}" for d in pandas.bdate_range("2024-03-01", periods=12)]
    assert future_dates(history, 12) == expected
    every_day = [f"{datetime(2024, 2, 1) + timedelta(days=i):%Y-%m-%d}" for i in range(29)]
    assert future_dates(every_day, 3) == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert future_dates(history[:2], 2) == ["2024-02-03", "2024-02-04"]  # no weekend seen: plain days
