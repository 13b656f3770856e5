"""Target kinds in the loaders: regression values and scalers, label sets, label tables, splits."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.data.multilabel_images import read_label_table
from attnlab.data.targets import TargetScaler, check_trained, multi_hot, parse_label_set, random_split
from attnlab.data.text import load_text_classification
from attnlab.data.timeseries import load_timeseries_task
from attnlab.errors import ConfigError, DataError


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_text_regression_scaler_is_fitted_on_the_training_split_only(tmp_path):
    folder = tmp_path / "reg"
    folder.mkdir()
    train = [f"{v}\tword{i} and more" for i, v in enumerate([1.0, 2.0, 4.0, 5.0])]
    _write(folder / "train.tsv", train)
    _write(folder / "dev.tsv", ["1000\tword1 and more"])
    _write(folder / "test.tsv", ["-1000\tword2 and more"])
    data = load_text_classification(str(folder), seed=0, tokenizer="word", target="regression")
    scaler = TargetScaler.from_dict(data.info["target_scaler"])
    assert scaler.mean == pytest.approx(3.0) and scaler.std == pytest.approx(np.std([1.0, 2.0, 4.0, 5.0]))
    assert data.num_classes == 1 and data.target == "regression" and data.metric == "mse"
    assert data.train.y.dtype == torch.float32 and data.test.y.tolist() == [-1000.0]
    z = scaler.transform(torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(scaler.inverse(z), torch.tensor([1.0, 5.0]))


def test_regression_targets_refuse_digit_separators(tmp_path):
    """Python's float() reads "1_000" as 1000; in a data file that is a typo, not a number."""
    folder = tmp_path / "reg"
    folder.mkdir()
    _write(folder / "train.tsv", ["1.5\tword0 and more", "1_000\tword1 and more", "2\tword2 and more"])
    _write(folder / "dev.tsv", ["1\tword1 and more"])
    _write(folder / "test.tsv", ["2\tword2 and more"])
    with pytest.raises(DataError, match=r"train.tsv:2: regression target '1_000' is not a number"):
        load_text_classification(str(folder), seed=0, tokenizer="word", target="regression")


def test_text_multilabel_reads_tab_space_and_quoted_csv_label_sets(tmp_path):
    tab = _write(tmp_path / "a.tsv", ["b,a\tone two", "c\tthree four", "a\tfive six", "a,c\tseven"] * 3)
    space = _write(tmp_path / "b.txt", ["b,a one two", "c three four", "a five six", "a,c seven"] * 3)
    quoted = _write(tmp_path / "c.csv", ["label,text"] + ['"b,a",one two', "c,three four", "a,five six", '"a,c",seven'] * 3)
    for path in (tab, space, quoted):
        data = load_text_classification(str(path), seed=0, tokenizer="word", target="multilabel", val_fraction=0.25,
                                        test_fraction=0.25)
        assert data.class_names == ["a", "b", "c"] and data.metric == "map"
        rows = {text: y.tolist() for split in (data.train, data.val, data.test) for text, y in zip(split.texts, split.y)}
        assert rows["one two"] == [1.0, 1.0, 0.0] and rows["three four"] == [0.0, 0.0, 1.0]


def test_single_label_text_keeps_commas_in_class_names_and_space_lines(tmp_path):
    path = _write(tmp_path / "t.txt", ["x,y first text", "z second text"] * 4)
    data = load_text_classification(str(path), seed=0, tokenizer="word")
    assert data.class_names == ["x,y", "z"] and data.target == "class"


def test_multilabel_label_unseen_in_training_names_file_and_line(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    _write(folder / "train.tsv", ["a,b\tone", "a\ttwo", "b\tthree"])
    _write(folder / "test.tsv", ["a\tone", "a,zebra\ttwo"])
    with pytest.raises(DataError, match=r"test\.tsv:2: label 'zebra' does not occur"):
        load_text_classification(str(folder), seed=0, tokenizer="word", target="multilabel")


def test_a_label_cut_into_a_held_out_split_only_is_refused(tmp_path):
    lines = [f"{'a,b' if i % 3 else 'b'}\tword{i} text" for i in range(40)] + ["zzzunseen\tthe unseen one"]
    path = _write(tmp_path / "ml.tsv", lines)
    train, _, test = random_split(41, seed=3, val_fraction=0.1, test_fraction=0.1)
    assert 40 in test  # with --seed 3 the last line lands in test
    with pytest.raises(DataError, match=r"ml\.tsv:41: label 'zzzunseen' does not occur in the training split: "
                                        r"line 41 with it went to the test split cut from this file \(--seed 3\)"):
        load_text_classification(str(path), seed=3, tokenizer="word", target="multilabel")
    data = load_text_classification(str(path), seed=0, tokenizer="word", target="multilabel")  # lands in train
    assert data.class_names == ["a", "b", "zzzunseen"]


def test_check_trained_names_every_held_out_line_of_the_label():
    values = {"train": ["a", "b"], "val": ["c"], "test": ["a", "c"]}
    lines = {"train": [1, 2], "val": [7], "test": [3, 5]}
    with pytest.raises(DataError, match=r"f\.tsv:5: label 'c' .* lines 5, 7 with it went to the test and val splits"):
        check_trained("class", "f.tsv", values, lines, cut_splits=["val", "test"], seed=0)
    check_trained("class", "f.tsv", values, lines, cut_splits=[], seed=0)  # given files: check_known's business
    check_trained("regression", "f.tsv", values, lines, cut_splits=["val", "test"], seed=0)


def test_single_label_classes_keep_a_training_example_and_the_cli_says_one_line(tmp_path, capsys):
    from attnlab.cli import main

    path = _write(tmp_path / "t.tsv", [f"{'pos' if i % 2 else 'neg'}\tword{i} text" for i in range(20)] + ["rare\tonce"])
    data = load_text_classification(str(path), seed=3, tokenizer="word")  # a per-class split keeps one in train
    assert "once" in data.train.texts and data.class_names == ["neg", "pos", "rare"]
    ml = _write(tmp_path / "ml.tsv", [f"a\tword{i} text" for i in range(40)] + ["zzzunseen\tthe unseen one"])
    out = tmp_path / "run"
    assert main(["train", "--task", "text-classification", "--data.target", "multilabel", "--data", str(ml),
                 "--seed", "3", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ml.tsv:41: label 'zzzunseen' does not occur in the training split" in err
    assert not out.exists()


def _ucr(root, labels_train, labels_test):
    root.mkdir()
    for split, labels in (("TRAIN", labels_train), ("TEST", labels_test)):
        _write(root / f"{root.name}_{split}.tsv", [f"{y}\t0.1\t0.5\t0.2\t0.9" for y in labels])
    return root


def test_numeric_ucr_labels_stay_classes_unless_regression_is_asked(tmp_path):
    root = _ucr(tmp_path / "Num", ["1", "2", "1", "2"], ["2", "1"])
    assert load_timeseries_task(root).class_names == ["1", "2"]
    data = load_timeseries_task(root, target="regression")
    assert data.target == "regression" and data.train.y.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert data.info["target_scaler"] == {"mean": 1.5, "std": 0.5}


def test_npz_regression_nan_target_names_the_array_and_index(tmp_path):
    path = tmp_path / "s.npz"
    y = np.array([1.0, 2.0, np.nan, 4.0])
    np.savez(path, x_train=np.zeros((4, 5)), y_train=y, x_test=np.zeros((2, 5)), y_test=np.array([1.0, 2.0]))
    with pytest.raises(DataError, match=r"s\.npz: y_train\[2\]: regression target 'nan' is not finite"):
        load_timeseries_task(path, target="regression")


def test_unknown_and_unsupported_targets_are_refused_by_name(tmp_path):
    root = _ucr(tmp_path / "Num", ["1", "2"], ["2"])
    with pytest.raises(ConfigError, match="does not support --data.target multilabel"):
        load_timeseries_task(root, target="multilabel")
    with pytest.raises(ConfigError, match="must be one of"):
        load_timeseries_task(root, target="numbers")


def test_label_set_parsing_and_multi_hot():
    assert parse_label_set(" b, a ,b", "f:1") == ["b", "a"]
    with pytest.raises(DataError, match="f:3: empty label set"):
        parse_label_set(" , ", "f:3")
    torch.testing.assert_close(multi_hot([["b"], ["a", "c"]], ["a", "b", "c"]), torch.tensor([[0.0, 1, 0], [1, 0, 1]]))


@pytest.mark.parametrize("n", [3, 10, 57])
def test_random_split_partitions_deterministically(n):
    parts = random_split(n, seed=1, val_fraction=0.2, test_fraction=0.1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(n)) and all(len(p) for p in parts)
    again = random_split(n, seed=1, val_fraction=0.2, test_fraction=0.1)
    assert all((a == b).all() for a, b in zip(parts, again))


def test_label_table_reads_relative_and_absolute_paths_and_checks_the_header(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    table = _write(tmp_path / "t.csv", ["file,cat,dog", "a.png,1,0", f"{tmp_path / 'a.png'},1,1", ""])
    files, names, y, lines = read_label_table(table)
    assert files == [tmp_path / "a.png"] * 2 and names == ["cat", "dog"] and y.tolist() == [[1, 0], [1, 1]]
    assert lines == [2, 3]
    bom = tmp_path / "excel.csv"
    bom.write_bytes(table.read_text().encode("utf-8-sig"))  # a spreadsheet's "CSV UTF-8": the header starts with a BOM
    assert read_label_table(bom)[1] == ["cat", "dog"]
    with pytest.raises(DataError, match=r"t2\.csv:1: the header needs exactly one file column"):
        read_label_table(_write(tmp_path / "t2.csv", ["name,cat", "a.png,1"]))
    with pytest.raises(DataError, match=r"t3\.csv:2: 2 cells for 3 columns"):
        read_label_table(_write(tmp_path / "t3.csv", ["path,cat,dog", "a.png,1"]))


def test_label_table_labels_must_have_training_examples(tmp_path):
    from attnlab.data.multilabel_images import load_multilabel_csv

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    rows = ["path,cat,dog,owl"] + [f"a.png,1,{i % 2},0" for i in range(20)]
    with pytest.raises(DataError, match=r"t\.csv: label column 'owl' is 0 in every row"):
        load_multilabel_csv(_write(tmp_path / "t.csv", rows), image_size=(4, 4))
    table = _write(tmp_path / "t.csv", rows[:-1] + ["a.png,1,0,1"])  # one 'owl' row, line 21
    kept, refused = [], []
    for seed in range(12):  # 10% val + 10% test: the row is cut out of training for about one seed in five
        try:
            data = load_multilabel_csv(table, image_size=(4, 4), seed=seed)
        except DataError as exc:
            assert re.search(r"t\.csv:21: label 'owl' does not occur in the training split: line 21 with it went to "
                             rf"the (val|test) split cut from this file \(--seed {seed}\)", str(exc)), exc
            refused.append(seed)
        else:
            assert 19 in data.train.indices.tolist() and data.class_names == ["cat", "dog", "owl"]
            kept.append(seed)
    assert kept and refused
