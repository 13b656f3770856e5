"""The MNIST format (`attnlab.data.mnist`): the real file, a synthetic one against its arrays,
classes the training split lacks, label gaps, and a finished run scored on another .npz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.data import RandomShift, load_mnist_task, prepare_image
from attnlab.errors import DataError
from attnlab.tasks import load_task
from tests.data._mnist_files import write_npz
from tests.data.test_vision import MNIST_FILE, exact, indices


@pytest.mark.skipif(not MNIST_FILE.exists(), reason=f"MNIST not found at {MNIST_FILE} (set ATTNLAB_DATA)")
def test_mnist_real_file():
    task = load_task("mnist", str(MNIST_FILE), seed=0)
    assert (len(task.train), len(task.val), len(task.test)) == (55000, 5000, 10000)
    assert task.num_classes == 10 and task.input_shape == (1, 28, 28)
    assert task.spec.mean == [0.1307] and task.spec.std == [0.3081]
    assert abs(task.train.x.mean().item()) < 0.05 and abs(task.train.x.std().item() - 1) < 0.05
    assert isinstance(task.batch_augment, RandomShift) and task.batch_augment.max_shift == 2
    assert not indices(task.train) & indices(task.val)


def test_mnist_synthetic(tmp_path):
    file = write_npz(tmp_path / "mnist.npz")
    raw = np.load(file)
    task = load_mnist_task(file, seed=3, val_size=10, augment=False)
    assert (len(task.train), len(task.val), len(task.test)) == (30, 10, 12)
    assert task.batch_augment is None and task.input_shape == (1, 28, 28)
    train, val = indices(task.train), indices(task.val)
    assert not train & val and train | val == set(range(40))
    i = int(task.val.indices[0])
    expected = (torch.from_numpy(raw["x_train"][i]).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(task.val.x[0, 0], expected)
    assert int(task.val.y[0]) == int(raw["y_train"][i])
    exact(prepare_image(raw["x_train"][i], task.spec), task.val.x[0])
    # The test split is the file's test split, in order.
    exact(task.test.y, torch.from_numpy(raw["y_test"]).long())
    # Same seed, same split; another seed, another split; a folder holding mnist.npz works too.
    exact(load_mnist_task(tmp_path, seed=3, val_size=10).val.indices, task.val.indices)
    assert indices(load_mnist_task(file, seed=4, val_size=10).val) != val


def _mnist_npz(tmp_path):
    """``npz(name, y_train, y_test)``: an mnist-format file of random 8 x 8 images with those labels."""
    rng = np.random.default_rng(0)

    def npz(name, y_train, y_test):
        path = tmp_path / name
        np.savez(path, x_train=rng.integers(0, 255, (len(y_train), 8, 8), dtype=np.uint8), y_train=np.asarray(y_train),
                 x_test=rng.integers(0, 255, (len(y_test), 8, 8), dtype=np.uint8), y_test=np.asarray(y_test))
        return path

    return npz


def test_evaluate_mnist_run_on_another_npz_refuses_other_labels_and_sizes(tmp_path, capsys):
    """A finished MNIST run scored on another .npz: a label past the run's classes or images of
    another size are one line naming the file (exit 2), not an index error or a shape error from
    inside the metrics or the model; a file that fits is scored with the run's class names."""
    from attnlab.cli import main

    rng = np.random.default_rng(0)

    def npz(name, size=8, labels=4, test_label=None):
        y_train, y_test = np.arange(40) % labels, np.arange(12) % labels
        if test_label is not None:
            y_test[5] = test_label
        path = tmp_path / name
        np.savez(path, x_train=rng.integers(0, 255, (40, size, size), dtype=np.uint8), y_train=y_train,
                 x_test=rng.integers(0, 255, (12, size, size), dtype=np.uint8), y_test=y_test)
        return path

    run = tmp_path / "run"
    assert main(["train", "--task", "mnist", "--data", str(npz("a.npz")), "--model", "vit-tiny", "--epochs", "1",
                 "--model.dim", "16", "--model.depth", "1", "--model.patch_size", "4", "--data.val_size", "8",
                 "--train.batch_size", "8", "--train.progress", "false", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--data", str(npz("fits.npz", labels=3)), "--json"]) == 0
    capsys.readouterr()
    for path, message in ((npz("label.npz", test_label=7), "y_test[5] is 7, past the run's 4 classes"),
                          (npz("size.npz", size=12), "images are 12x12 but the run was trained on 8x8")):
        assert main(["evaluate", str(run), "--data", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and str(path) in err and len(err.splitlines()) == 1, err


def test_mnist_classes_without_training_examples_are_refused_by_name(tmp_path, capsys):
    """num_classes counts every label up to the largest, so a class only the test split has (or
    whose every y_train example was cut into validation) would be scored but never trained."""
    from attnlab.cli import main
    npz = _mnist_npz(tmp_path)

    test_only = npz("test_only.npz", np.arange(40) % 3, np.arange(10) % 5)
    with pytest.raises(DataError, match=r"test label\(s\) \[3, 4\] never occur in the training split \(y_train has none"):
        load_mnist_task(test_only, val_size=4)
    assert main(["train", "--task", "mnist", "--data", str(test_only), "--data.val_size", "4", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "[3, 4]" in err and str(test_only) in err and len(err.splitlines()) == 1, err
    y_train = np.arange(40) % 3
    y_train[np.random.default_rng(0).permutation(40)[:1]] = 3  # one 3, at the position seed 0 cuts into validation first
    val_only = npz("val_only.npz", y_train, np.arange(10) % 3)
    with pytest.raises(DataError, match=r"validation label\(s\) \[3\] never occur .* went to validation: --seed 0"):
        load_mnist_task(val_only, val_size=4)
    # a finished run scores another file by its own training: not refused
    assert load_mnist_task(test_only, val_size=4, class_names=[str(c) for c in range(5)]).num_classes == 5


def test_an_mnist_label_with_no_example_anywhere_keeps_the_label_range_with_one_warning(tmp_path, caplog):
    """Labels are output indices (output k is label k, as torch's cross-entropy and timm's
    num_classes read them), so a label of the range that no example has (0-9 without 7; 1-based
    labels leave 0 empty) keeps its output, and one warning names the file and the empty label(s).
    A finished run scoring a file with some of its classes says nothing (that is evaluation)."""
    import logging

    from attnlab.data.mnist import load_mnist_task

    npz = _mnist_npz(tmp_path)

    digits = np.array([d for d in range(10) if d != 7])
    gap = npz("gap.npz", np.resize(digits, 45), np.resize(digits, 18))
    with caplog.at_level(logging.WARNING, logger="attnlab.data.vision"):
        task = load_mnist_task(gap, val_size=9)
    assert task.num_classes == 10 and task.class_names == [str(c) for c in range(10)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(gap) in warnings[0] and "label 7 has no example" in warnings[0], warnings
    caplog.clear()
    one_based = npz("one_based.npz", np.arange(40) % 3 + 1, np.arange(12) % 3 + 1)
    with caplog.at_level(logging.WARNING, logger="attnlab.data.vision"):
        assert load_mnist_task(one_based, val_size=4).num_classes == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "label 0 has no example" in warnings[0] and "start at 1" in warnings[0], warnings
    caplog.clear()
    full = npz("full.npz", np.arange(40) % 4, np.arange(12) % 4)
    with caplog.at_level(logging.WARNING, logger="attnlab.data.vision"):
        load_mnist_task(full, val_size=4)
        load_mnist_task(gap, val_size=9, class_names=[str(c) for c in range(10)])  # a finished run's evaluation
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
