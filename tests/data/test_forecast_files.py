"""Reading a forecasting series file (`attnlab.data.forecast_files`): CSV and arrays, missing values,
dates, and the one-line refusals that name the file, line and column."""

from __future__ import annotations

import numpy as np
import pytest

from attnlab.data.forecast_files import read_series
from attnlab.errors import DataError
from tests.data._series_files import edit_lines, series_csv


def test_arrays_read_as_series(tmp_path):
    values = np.random.default_rng(2).normal(size=(300, 2)).astype(np.float32)
    np.save(tmp_path / "s.npy", values)
    np.savez(tmp_path / "s.npz", data=values)
    for name in ("s.npy", "s.npz"):
        series = read_series(tmp_path / name)
        assert series.names == ["c0", "c1"] and series.dates is None
        np.testing.assert_array_equal(series.values, values.astype(np.float64))
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match=r"bad.npy: expected an array of shape \(T, C\)"):
        read_series(tmp_path / "bad.npy")


def test_missing_values_are_refused_or_interpolated(tmp_path):
    values = np.arange(40, dtype=np.float64).reshape(20, 2) ** 1.5
    path = series_csv(tmp_path / "s.csv", values, names=["a", "b"])
    lines = path.read_text().splitlines()
    cells = lines[4].split(",")  # data row 3 (line 5 of the file)
    cells[2] = ""
    lines[4] = ",".join(cells)
    cells = lines[1].split(",")  # and the very first value of "a"
    cells[1] = "nan"
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"s.csv: line 2, column 'a': missing value \(NaN\); 2 in all"):
        read_series(path)
    filled = read_series(path, nan="interpolate").values
    t = np.arange(20)
    keep = t != 3
    np.testing.assert_allclose(filled[3, 1], np.interp(3, t[keep], values[keep, 1]))
    assert filled[0, 0] == values[1, 0]  # an end takes the nearest value (np.interp's edges)
    np.testing.assert_array_equal(np.delete(filled, [0], axis=0)[:, 0], values[1:, 0])


def test_a_csv_that_is_not_utf8_names_the_line_and_byte(tmp_path):
    path = series_csv(tmp_path / "s.csv", np.ones((30, 2)), names=["a", "b"])
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"1.0", "caf\u00e9".encode("latin-1"), 1)  # a latin-1 é on line 7
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"s\.csv: line 7, column 24: byte 0xe9 is not UTF-8; save the file as UTF-8"):
        read_series(path)


@pytest.mark.parametrize("name, content, expected", [
    ("text.npz", b"hello, world\n", r"text\.npz: not a NumPy \.npy/\.npz file \(it begins with neither"),
    ("text.npy", b"date,a\n", r"text\.npy: not a NumPy \.npy/\.npz file"),
    ("empty.npy", b"", r"empty\.npy: not a NumPy \.npy/\.npz file \(it is empty\)"),
    ("cut.npz", b"PK\x03\x04 truncated", r"cut\.npz: cannot read as a NumPy file"),
])
def test_a_file_that_is_not_numpy_is_named_as_such(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=expected):
        read_series(tmp_path / name)


def test_an_npz_member_that_is_not_an_array(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as z:
        z.writestr("data.npy", b"not an array")
    with pytest.raises(DataError, match=r"odd\.npz: 'data' is not a NumPy array"):
        read_series(tmp_path / "odd.npz")


def test_a_folder_is_not_a_series_file(tmp_path):
    (tmp_path / "ett").mkdir()
    with pytest.raises(DataError, match=r"ett: a folder, not a series file; give one \.csv, \.npy or \.npz file"):
        read_series(tmp_path / "ett")


def test_only_blank_lines_are_skipped_and_lines_keep_their_numbers(tmp_path):
    path = series_csv(tmp_path / "s.csv", np.arange(40.0).reshape(20, 2), names=["a", "b"])
    edit_lines(path, {9: "2021-01-01 08:00:00,,3"}, insert={3: "", 5: "   "})  # blank lines 4 and 7 push line 10 to 12
    with pytest.raises(DataError, match=r"s\.csv: line 12, column 'a': missing value \(NaN\); 1 in all "
                                         r"\(train with --data\.nan interpolate to fill them linearly in time\)"):
        read_series(path)
    series = read_series(path, nan="interpolate")
    assert len(series.values) == 20 and series.filled == 1 and series.lines[:5] == [2, 3, 5, 6, 8]
    edit_lines(path, {}, insert={8: ",,"})  # a row of empty cells is a time step, not a blank line
    with pytest.raises(DataError, match=r"s\.csv: line 9, column 'date': empty date"):
        read_series(path, nan="interpolate")


@pytest.mark.parametrize("header, expected", [
    ("date,a,a", r"s\.csv: line 1: column name 'a' appears twice \(columns 2 and 3\)"),
    (",date,a", r"s\.csv: line 1, column 1: empty column name \(a pandas index\? save with to_csv\(index=False\)\)"),
    ("date,a,", r"s\.csv: line 1, column 3: empty column name"),
])
def test_duplicate_and_empty_column_names_are_refused(tmp_path, header, expected):
    path = edit_lines(series_csv(tmp_path / "s.csv", np.ones((10, 2)), names=["a", "b"]), {0: header})
    with pytest.raises(DataError, match=expected):
        read_series(path)


@pytest.mark.parametrize("edits, expected", [
    ({4: ",1.0,2.0"}, r"line 5, column 'date': empty date"),
    ({4: "2021/01/01 03:00,1.0,2.0"}, r"line 5, column 'date': '2021/01/01 03:00' is not an ISO 8601 date"),
    ({4: "2021-01-01 02:00:00,1.0,2.0"}, r"line 5, column 'date': '2021-01-01 02:00:00' is not after line 4's "
                                         r"'2021-01-01 02:00:00'; dates must be strictly increasing"),
    ({4: "2021-01-01 04:00:00,1.0,2.0", 5: "2021-01-01 03:00:00,1.0,2.0"},
     r"line 6, column 'date': '2021-01-01 03:00:00' is not after line 5's '2021-01-01 04:00:00'"),
    ({4: "2021-01-01T03:00:00+01:00,1.0,2.0"}, r"line 5, column 'date': '2021-01-01T03:00:00\+01:00' and line 4's "
                                               r"'2021-01-01 02:00:00' mix dates with and without a time zone"),
])
def test_dates_must_be_iso_and_strictly_increasing(tmp_path, edits, expected):
    path = edit_lines(series_csv(tmp_path / "s.csv", np.ones((10, 2)), names=["a", "b"]), edits)
    with pytest.raises(DataError, match=r"s\.csv: " + expected):
        read_series(path)


def test_a_reversed_file_and_iso_variants(tmp_path):
    path = series_csv(tmp_path / "s.csv", np.ones((10, 2)), names=["a", "b"])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[:0:-1]) + "\n")
    with pytest.raises(DataError, match=r"line 3, column 'date': '2021-01-01 08:00:00' is not after line 2's"):
        read_series(path)
    for stamps in (["2021-01-01", "2021-01-02", "2021-01-04"], ["2021-01-01T00:00", "2021-01-01T00:30:00", "2021-01-01 01:00"],
                   ["2021-01-01T00:00:00+00:00", "2021-01-01T00:00:00-01:00", "2021-01-01T02:00:00Z"]):
        path.write_text("date,a\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps)))
        assert read_series(path).dates == stamps


def test_underscores_are_not_numbers(tmp_path):
    path = edit_lines(series_csv(tmp_path / "s.csv", np.ones((10, 2)), names=["a", "b"]), {3: "2021-01-01 02:00:00,1_000,2"})
    with pytest.raises(DataError, match=r"s\.csv: line 4, column 'a': '1_000' is not a number"):
        read_series(path)
