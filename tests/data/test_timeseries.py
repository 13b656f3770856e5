"""UCR time-series data: reader, labels, z-normalisation, errors, splits, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.tasks import load_task
from attnlab.data.timeseries import (
    SeriesAugment,
    label_names,
    load_timeseries_task,
    read_series_file,
    read_ucr_file,
    znormalize,
)
from attnlab.errors import ConfigError, DataError

UCR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ucr"

TRAIN = "-1\t1.0\t2.0\t3.0\t4.0\n1\t0.5\t0.5\t0.5\t0.5\n1\t-2\t0\t2\t10\n-1\t4\t3\t2\t1\n"
TEST = "1\t1\t1\t2\t2\n-1\t3.5\t1e-1\t-7\t0\n"


def _write(folder: Path, name: str, train: str = TRAIN, test: str = TEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_TRAIN.tsv").write_text(train)
    (folder / f"{name}_TEST.tsv").write_text(test)
    return folder


def test_reader_keeps_values_and_original_labels(tmp_path):
    root = _write(tmp_path / "Toy", "Toy")
    x, labels = read_ucr_file(root / "Toy_TRAIN.tsv")
    assert x.dtype == np.float64 and x.shape == (4, 4)
    np.testing.assert_array_equal(x[2], [-2.0, 0.0, 2.0, 10.0])
    assert labels == ["-1", "1", "1", "-1"]
    assert label_names(labels) == ["-1", "1"]
    assert label_names(["10", "2", "-3"]) == ["-3", "2", "10"]  # numeric, not text, order
    assert label_names(["b", "a"]) == ["a", "b"]


def test_task_maps_labels_and_znormalises_each_series(tmp_path):
    root = _write(tmp_path / "Toy", "Toy")
    data = load_task("timeseries", str(root), seed=0)
    assert data.class_names == ["-1", "1"] and data.num_classes == 2
    assert data.input_shape == (1, 4)
    assert data.train.y.tolist() == [0, 1, 1, 0] and data.test.y.tolist() == [1, 0]
    raw = np.array([[1.0, 2, 3, 4], [0.5, 0.5, 0.5, 0.5], [-2, 0, 2, 10], [4, 3, 2, 1]])
    ref = torch.from_numpy(raw)
    ref = (ref - ref.mean(-1, keepdim=True)) / ref.std(-1, unbiased=False, keepdim=True)
    ref[1] = 0.0  # a flat series is centred, not divided by zero
    torch.testing.assert_close(data.train.x[:, 0].double(), ref, rtol=1e-6, atol=1e-6)
    assert data.train.x.dtype == torch.float32
    info = data.info
    assert info["length"] == 4 and info["channels"] == 1 and info["normalize"] == "zscore"
    assert info["label_names"] == ["-1", "1"] and info["format"] == "ucr-tsv"
    raw_data = load_timeseries_task(root, normalize="none")
    torch.testing.assert_close(raw_data.test.x[1, 0].double(), torch.tensor([3.5, 0.1, -7, 0], dtype=torch.float64))


def test_znormalize_matches_float64_numpy():
    x = np.random.default_rng(0).normal(3.0, 5.0, size=(7, 3, 50))
    ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    np.testing.assert_allclose(znormalize(x), ref, rtol=1e-12)
    np.testing.assert_allclose(znormalize(x).mean(-1), 0, atol=1e-12)


@pytest.mark.parametrize(
    "row, message",
    [
        ("1\t1.0\tNaN\t3.0\t4.0\n", r"Toy_TRAIN\.tsv:3: column 3 is a missing value \(NaN\)"),
        ("1\t1.0\t2.0\t3.0\n", r"Toy_TRAIN\.tsv:3: row has 3 values but line 1 has 4"),
        ("1\t1.0\tabc\t3.0\t4.0\n", r"Toy_TRAIN\.tsv:3: column 3 holds 'abc', not a number"),
        ("1\n", r"Toy_TRAIN\.tsv:3: a row needs a label"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    lines = TRAIN.splitlines(keepends=True)
    root = _write(tmp_path / "Toy", "Toy", train="".join(lines[:2] + [row] + lines[2:]))
    with pytest.raises(DataError, match=message):
        load_timeseries_task(root)


def test_folder_and_label_errors(tmp_path):
    with pytest.raises(DataError, match="needs --data"):
        load_task("timeseries", None, seed=0)
    empty = tmp_path / "Empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"exactly one \*_TRAIN\.TSV file, found none"):
        load_timeseries_task(empty)
    root = _write(tmp_path / "Toy", "Toy", test="7\t1\t2\t3\t4\n")
    with pytest.raises(DataError, match=r"test labels \['7'\] never occur"):
        load_timeseries_task(root)
    root = _write(tmp_path / "Short", "Short", test="1\t1\t2\t3\n")
    with pytest.raises(DataError, match="length 4 but .* has 3"):
        load_timeseries_task(root)
    with pytest.raises(ConfigError, match="has no option"):
        load_task("timeseries", str(_write(tmp_path / "T2", "T2")), seed=0, bogus=1)
    with pytest.raises(ConfigError, match="normalize must be one of"):
        load_timeseries_task(_write(tmp_path / "T3", "T3"), normalize="minmax")


def test_series_of_one_value_are_refused_by_zscore_and_kept_raw_by_none(tmp_path):
    root = _write(tmp_path / "One", "One", train="1\t3.0\n2\t5.0\n1\t2.5\n", test="2\t4.0\n")
    with pytest.raises(DataError, match=r"One_TRAIN\.tsv: series of length 1; z-normalisation"):
        load_timeseries_task(root)  # z-normalising one value gives 0: every series would be the same
    data = load_timeseries_task(root, normalize="none")
    np.testing.assert_array_equal(data.test[0][0].numpy(), [[4.0]])


def test_validation_split_is_stratified_and_seeded(tmp_path):
    rng = np.random.default_rng(1)
    rows = [f"{c}\t" + "\t".join(f"{v:.4f}" for v in rng.normal(size=8)) for c in [1] * 20 + [2] * 10]
    root = _write(tmp_path / "S", "S", train="\n".join(rows) + "\n", test=rows[0] + "\n" + rows[-1] + "\n")
    full = load_timeseries_task(root)
    assert len(full.train) == len(full.val) == 30  # val_fraction=0: the val split is the training set
    a = load_timeseries_task(root, seed=3, val_fraction=0.2)
    b = load_timeseries_task(root, seed=3, val_fraction=0.2)
    c = load_timeseries_task(root, seed=4, val_fraction=0.2)
    assert a.val.indices.tolist() == b.val.indices.tolist() != c.val.indices.tolist()
    assert sorted(a.val.y.tolist()) == [0, 0, 0, 0, 1, 1]
    assert set(a.val.indices.tolist()).isdisjoint(a.train.indices.tolist()) and len(a.train) == 24


def test_npz_multivariate(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "multi.npz"
    np.savez(path, x_train=rng.normal(size=(6, 3, 10)), y_train=np.array(["a", "b"] * 3),
             x_test=rng.normal(size=(2, 3, 10)), y_test=np.array(["b", "a"]))
    data = load_timeseries_task(path)
    assert data.input_shape == (3, 10) and data.class_names == ["a", "b"] and data.info["format"] == "npz"
    np.testing.assert_allclose(data.train.x.double().numpy(), znormalize(np.load(path)["x_train"]), rtol=1e-5, atol=1e-5)
    bad = tmp_path / "bad.npz"
    x = rng.normal(size=(2, 3, 10))
    x[1, 2, 4] = np.nan
    np.savez(bad, x_train=x, y_train=np.array([0, 1]), x_test=x[:1], y_test=np.array([0]))
    with pytest.raises(DataError, match=r"x_train\[1\] holds a NaN .*channel 2, step 4"):
        load_timeseries_task(bad)


def test_read_series_file_formats(tmp_path):
    with_label = tmp_path / "a.tsv"
    with_label.write_text("1\t1\t2\t3\t4\n\n2\t4\t3\t2\t1\n")
    x, labels, names = read_series_file(with_label, length=4)
    assert x.shape == (2, 1, 4) and labels == ["1", "2"] and names == [f"{with_label}:1", f"{with_label}:3"]
    values_only = tmp_path / "b.csv"
    values_only.write_text("1,2,3,4\n")
    x, labels, names = read_series_file(values_only, length=4)
    assert labels == [None] and names == [str(values_only)]
    npy = tmp_path / "c.npy"
    np.save(npy, np.arange(8.0).reshape(2, 4))
    assert read_series_file(npy, length=4)[0].shape == (2, 1, 4)
    with pytest.raises(DataError, match=r"b\.csv:1: 4 values; the model takes series of 5 \(optionally after a label\)$"):
        read_series_file(values_only, length=5)
    semicolons = tmp_path / "d.csv"
    semicolons.write_text("1;2;3;4\n")  # a European spreadsheet's CSV: one value, no word of why
    with pytest.raises(DataError, match=r"d\.csv:1: 1 values; .*separated by tabs, commas or spaces, not ';'\)"):
        read_series_file(semicolons, length=4)
    with pytest.raises(DataError, match=r"c\.npy: expected series of shape"):
        read_series_file(npy, length=5)


def test_augment_is_seeded_and_keeps_shape():
    x = torch.randn(4, 2, 30)
    aug = SeriesAugment(jitter=0.1, scale=0.2, max_shift=3)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    shifted = SeriesAugment(max_shift=2)(x, torch.Generator().manual_seed(1))
    # a pure shift moves values along time (edges repeat): each row is a shifted copy of x
    for i in range(4):
        assert any(torch.equal(shifted[i, :, 3:-3], x[i, :, 3 - s : 27 - s]) for s in range(-2, 3))
    assert not SeriesAugment().active
    with pytest.raises(ConfigError):
        SeriesAugment(jitter=-1)


def test_real_ecg200_loads():
    root = UCR_DIR / "ECG200"
    if not root.is_dir():
        pytest.skip(f"UCR data not found at {root}")
    data = load_task("timeseries", str(root), seed=0)
    assert data.class_names == ["-1", "1"] and data.input_shape == (1, 96)
    assert len(data.train) == 100 and len(data.test) == 100
    assert torch.isfinite(data.train.x).all()
    torch.testing.assert_close(data.test.x.mean(-1), torch.zeros(100, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("target", ["class", "regression"])
def test_a_file_that_is_not_numpy_is_one_data_error(tmp_path, target):
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("label,value\n1,2\n")
    with pytest.raises(DataError, match=r"garbage\.npz: not a NumPy \.npy/\.npz file \(it begins with neither"):
        load_timeseries_task(garbage, target=target)
    single = tmp_path / "single.npz"  # an .npy saved under an .npz name
    with open(single, "wb") as f:
        np.save(f, np.zeros((4, 8)))
    with pytest.raises(DataError, match=r"single\.npz: a single \.npy array, not an \.npz archive"):
        load_timeseries_task(single, target=target)
    (tmp_path / "s.npy").write_bytes(b"")
    with pytest.raises(DataError, match=r"s\.npy: not a NumPy \.npy/\.npz file \(it is empty\)"):
        read_series_file(tmp_path / "s.npy", length=8)


def test_underscores_and_bytes_that_are_not_utf8_name_the_line(tmp_path):
    root = _write(tmp_path / "Toy", "Toy", train=TRAIN + "1\t1_000\t2\t3\t4\n")
    with pytest.raises(DataError, match=r"Toy_TRAIN\.tsv:5: column 2 holds '1_000', not a number"):
        load_timeseries_task(root)
    (root / "Toy_TRAIN.tsv").write_bytes(TRAIN.encode() + "1\t1\t2\t3\t4 \u00b0C\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"Toy_TRAIN\.tsv: line 5, column 11: byte 0xb0 is not UTF-8"):
        load_timeseries_task(root)
    with pytest.raises(DataError, match=r"Toy_TRAIN\.tsv: line 5, column 11: byte 0xb0 is not UTF-8"):
        read_series_file(root / "Toy_TRAIN.tsv", length=4)


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_label(tmp_path):
    """Editors on Windows save "UTF-8 with BOM": U+FEFF before the first label must not make a
    class of its own ("\\ufeff-1" beside "-1"), nor hide the first value of a predict file."""
    root = tmp_path / "Bom"
    root.mkdir()
    (root / "Bom_TRAIN.tsv").write_bytes(b"\xef\xbb\xbf" + TRAIN.encode())
    (root / "Bom_TEST.tsv").write_bytes(b"\xef\xbb\xbf" + TEST.encode())
    x, labels = read_ucr_file(root / "Bom_TRAIN.tsv")
    assert labels == ["-1", "1", "1", "-1"] and x[0].tolist() == [1.0, 2.0, 3.0, 4.0]
    data = load_timeseries_task(root)
    assert data.class_names == ["-1", "1"] and data.test.y.tolist() == [1, 0]
    values = tmp_path / "series.csv"
    values.write_bytes(b"\xef\xbb\xbf0.5,1,2,3\n")
    x, labels, _ = read_series_file(values, length=4)
    assert labels == [None] and x[0, 0].tolist() == [0.5, 1.0, 2.0, 3.0]


def test_a_runs_unknown_label_in_an_npz_names_the_label_array(tmp_path):
    """The refusal points at y_test (where the label is), not x_test."""
    path = tmp_path / "xy.npz"
    x = np.random.default_rng(0).normal(size=(4, 1, 8))
    np.savez(path, x_train=x, y_train=np.array(["a", "b", "a", "b"]), x_test=x[:2], y_test=np.array(["a", "z"]))
    with pytest.raises(DataError, match=r"xy\.npz: y_test: label 'z' is not one of the run's 2 classes"):
        load_timeseries_task(path, class_names=["a", "b"])
