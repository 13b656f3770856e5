"""Vision data: digits, image folders, prepare_image, and every bad-data error (MNIST: test_mnist.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.data import (
    ImageSpec,
    RandomShift,
    TaskData,
    TensorPairDataset,
    load_digits_task,
    load_image_folder_task,
    load_mnist_task,
    prepare_image,
)
from attnlab.errors import ConfigError, DataError
from attnlab.tasks import TASKS, load_task
from tests.data._mnist_files import write_npz

DATA_DIR = Path(os.environ.get("ATTNLAB_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
MNIST_FILE = DATA_DIR / "mnist" / "mnist.npz"


def exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def indices(ds) -> set[int]:
    return set(ds.indices.tolist())


def item(task: TaskData, i: int) -> torch.Tensor:
    """The input tensor of source item i, whichever split holds it."""
    for ds in (task.train, task.val, task.test):
        hits = (ds.indices == i).nonzero()
        if len(hits):
            return ds.x[int(hits[0, 0])]
    raise KeyError(i)


# --- digits ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_digits_task(seed=0)


def test_digits_shapes_and_split_sizes(digits):
    assert digits.task == "digits" and digits.num_classes == 10 and digits.input_shape == (1, 8, 8)
    assert digits.class_names == [str(i) for i in range(10)]
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1797 - 180 - 359, 180, 359)
    x, y = digits.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert y.shape == () and y.dtype == torch.int64
    assert digits.batch_augment is None
    s = digits.summary()
    assert s["train_size"] == len(digits.train) and s["input_shape"] == [1, 8, 8]
    json.dumps(s)


def test_digits_splits_disjoint_and_stratified(digits):
    train, val, test = indices(digits.train), indices(digits.val), indices(digits.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 1797
    overall = torch.bincount(torch.cat([digits.train.y, digits.val.y, digits.test.y]), minlength=10).double()
    for ds in (digits.train, digits.val, digits.test):
        counts = torch.bincount(ds.y, minlength=10).double()
        expected = overall / overall.sum() * len(ds)
        assert (counts - expected).abs().max() <= 1.5


def test_digits_deterministic_by_seed(digits):
    again = load_digits_task(seed=0)
    exact(again.train.x, digits.train.x)
    exact(again.test.y, digits.test.y)
    other = load_digits_task(seed=1)
    assert indices(other.test) != indices(digits.test)


def test_digits_train_normalisation(digits):
    x = digits.train.x
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.std(correction=0).item() - 1) < 1e-4
    assert digits.spec.pixel_max == 16 and digits.spec.channels == 1


def test_digits_augment_option():
    task = load_digits_task(seed=0, augment=True)
    assert isinstance(task.batch_augment, RandomShift) and task.batch_augment.max_shift == 1


def test_prepare_image_reproduces_digits(digits, tmp_path):
    from sklearn.datasets import load_digits

    images = load_digits().images
    for k in (0, 7):
        i = int(digits.train.indices[k])
        exact(prepare_image(images[i], digits.spec), digits.train.x[k])
        exact(prepare_image(images[i].reshape(64), digits.spec), digits.train.x[k])
        exact(prepare_image(images[i].astype(np.uint8), digits.spec), digits.train.x[k])
        np.save(tmp_path / f"d{k}.npy", images[i])
        exact(prepare_image(tmp_path / f"d{k}.npy", digits.spec), digits.train.x[k])
    # The spec survives the JSON round trip the run directory uses.
    spec = ImageSpec.from_dict(json.loads(json.dumps(digits.spec.to_dict())))
    assert spec == digits.spec


def test_random_shift_keeps_shape_and_moves_content():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    torch.manual_seed(0)
    out = RandomShift(2, fill=-5.0)(x)
    assert out.shape == x.shape
    positions = (out[:, 0] == 1).flatten(1).float().argmax(1)
    rows, cols = positions // 9, positions % 9
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all()
    assert ((rows != 4) | (cols != 4)).any(), "nothing moved"
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5
    assert (out == -5.0).any() and ((out == -5.0) | (out == 0) | (out == 1)).all()
    torch.manual_seed(0)
    exact(RandomShift(2, fill=-5.0)(x), out)  # replayable from the global seed
    one = RandomShift(2)(torch.randn(3, 9, 9))
    assert one.shape == (3, 9, 9)


def test_random_shift_matches_pad_and_crop():
    x = torch.randn(16, 3, 6, 7)
    gen = torch.Generator().manual_seed(5)
    out = RandomShift(1, fill=[0.5, -1.0, 2.0])(x, generator=gen)
    padded = torch.stack([torch.nn.functional.pad(x[:, c], (1, 1, 1, 1), value=v) for c, v in enumerate([0.5, -1.0, 2.0])], 1)
    for b in range(16):
        crops = [padded[b, :, i : i + 6, j : j + 7] for i in range(3) for j in range(3)]
        assert any(torch.equal(out[b], c) for c in crops)


def test_tensor_pair_dataset_item_augment():
    ds = TensorPairDataset(torch.zeros(4, 1, 5, 5), torch.arange(4), augment=lambda x: x + 1)
    x, y = ds[2]
    assert float(x.mean()) == 1.0 and int(y) == 2 and ds.y.dtype == torch.int64 and len(ds) == 4
    with pytest.raises(DataError):
        TensorPairDataset(torch.zeros(3, 2), torch.zeros(2))


# --- image folders ---------------------------------------------------------------------------


def make_folder(root: Path, classes: dict[str, list[str]], size=(12, 10), seed=0) -> list[Path]:
    """classes: name -> list of modes per image ('L' or 'RGB'). Returns files in load order."""
    rng = np.random.default_rng(seed)
    files = []
    for name in sorted(classes):
        (root / name).mkdir(parents=True)
        for k, mode in enumerate(classes[name]):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            path = root / name / f"img{k}.png"
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
            files.append(path)
    return files


def test_image_folder_grayscale(tmp_path):
    files = make_folder(tmp_path, {"cat": ["L"] * 5, "ant": ["L"] * 5})
    task = load_image_folder_task(tmp_path, image_size=(8, 8), seed=0)
    assert task.class_names == ["ant", "cat"] and task.input_shape == (1, 8, 8) and task.spec.channels == 1
    assert (len(task.train), len(task.val), len(task.test)) == (6, 2, 2)
    for ds in (task.val, task.test):
        assert sorted(ds.y.tolist()) == [0, 1]  # one of each class: split per class
    assert abs(task.train.x.mean().item()) < 1e-5 and abs(task.train.x.std(correction=0).item() - 1) < 1e-4
    for ds in (task.train, task.val, task.test):
        for k, i in enumerate(ds.indices.tolist()):
            exact(prepare_image(files[i], task.spec), ds.x[k])
            assert int(ds.y[k]) == (0 if files[i].parent.name == "ant" else 1)
    again = load_task("images", str(tmp_path), seed=0, image_size=(8, 8))
    exact(again.train.x, task.train.x)
    assert any(indices(load_image_folder_task(tmp_path, image_size=(8, 8), seed=s).test) != indices(task.test) for s in (1, 2, 3))


def test_image_folder_rgb_auto_and_forced(tmp_path):
    files = make_folder(tmp_path, {"a": ["L", "L", "RGB"], "b": ["L", "L", "L"]})
    assert Image.open(files[2]).mode == "RGB"
    Image.fromarray(np.full((6, 6, 3), 200, np.uint8)).save(tmp_path / "b" / "extra.jpg")
    Image.fromarray(np.full((6, 6), 30, np.uint8)).save(tmp_path / "b" / "extra2.bmp")
    (tmp_path / "b" / "notes.txt").write_text("ignored")
    task = load_image_folder_task(tmp_path, image_size=(6, 5))
    assert task.input_shape == (3, 6, 5) and len(task.spec.mean) == 3
    assert len(task.train) + len(task.val) + len(task.test) == 8
    order = [p for d in sorted(tmp_path.iterdir()) for p in sorted(d.iterdir()) if p.suffix != ".txt"]
    assert [p.name for p in order[3:5]] == ["extra.jpg", "extra2.bmp"]
    for i, file in enumerate(order):  # grey and RGB pngs, a jpg, a bmp
        exact(prepare_image(file, task.spec), item(task, i))
    gray = load_image_folder_task(tmp_path, image_size=(6, 5), channels=1)
    assert gray.input_shape == (1, 6, 5)
    x = prepare_image(Image.open(files[2]), gray.spec)
    assert x.shape == (1, 6, 5)


def test_prepare_image_array_conversions(tmp_path):
    spec = ImageSpec(channels=3, height=4, width=4, mean=[0.5] * 3, std=[0.25] * 3)
    a = np.full((4, 4), 255, np.uint8)
    exact(prepare_image(a, spec), torch.full((3, 4, 4), 2.0))
    exact(prepare_image(np.ones((4, 4, 3)), spec), torch.full((3, 4, 4), 2.0))  # float in [0, 1]
    assert prepare_image(np.zeros((8, 8), np.uint8), spec).shape == (3, 4, 4)  # resized
    assert prepare_image(torch.zeros(3, 4, 4), spec).shape == (3, 4, 4)


# --- registry and bad data -------------------------------------------------------------------


def test_registry():
    assert {"digits", "mnist", "images"} <= set(TASKS)
    with pytest.raises(ConfigError, match="known tasks: .*digits.*images.*mnist"):
        load_task("nope", None, seed=0)
    for task in ("mnist", "images"):
        with pytest.raises(DataError, match="--data"):
            load_task(task, None, seed=0)
    with pytest.raises(ConfigError, match="bogus"):
        load_task("digits", None, seed=0, bogus=1)


def bad_cases(tmp: Path):
    """(callable, path that must appear in the message)."""
    cases = []
    missing = tmp / "missing.npz"
    cases.append((lambda: load_mnist_task(missing), missing))
    nokeys = write_npz(tmp / "nokeys.npz", y_test=None)
    cases.append((lambda: load_mnist_task(nokeys), "y_test"))
    cases.append((lambda: load_mnist_task(nokeys), nokeys))
    mism = write_npz(tmp / "mism.npz", y_train=np.zeros(7, np.uint8))
    cases.append((lambda: load_mnist_task(mism, val_size=2), mism))
    corrupt = tmp / "corrupt.npz"
    corrupt.write_bytes(b"not a zip")
    cases.append((lambda: load_mnist_task(corrupt), corrupt))
    emptydir = tmp / "emptydir"
    emptydir.mkdir()
    cases.append((lambda: load_mnist_task(emptydir), emptydir))
    small = write_npz(tmp / "small.npz")
    cases.append((lambda: load_mnist_task(small), small))  # val_size 5000 > 40 images

    cases.append((lambda: load_image_folder_task(tmp / "nofolder"), tmp / "nofolder"))
    cases.append((lambda: load_image_folder_task(small), small))
    cases.append((lambda: load_image_folder_task(emptydir), emptydir))
    loose = tmp / "loose"
    loose.mkdir()
    Image.new("L", (4, 4)).save(loose / "x.png")
    cases.append((lambda: load_image_folder_task(loose), loose))
    one = tmp / "one"
    make_folder(one, {"only": ["L"]})
    cases.append((lambda: load_image_folder_task(one), one))
    noimg = tmp / "noimg"
    make_folder(noimg, {"a": ["L"]})
    (noimg / "b").mkdir()
    (noimg / "b" / "readme.txt").write_text("x")
    cases.append((lambda: load_image_folder_task(noimg), noimg / "b"))
    broken = tmp / "broken"
    make_folder(broken, {"a": ["L"], "b": ["L"]})
    (broken / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cases.append((lambda: load_image_folder_task(broken), broken / "b" / "bad.png"))

    spec = ImageSpec(channels=1, height=8, width=8, mean=[0.3], std=[0.4], pixel_max=16)
    cases.append((lambda: prepare_image(tmp / "none.png", spec), tmp / "none.png"))
    cases.append((lambda: prepare_image(emptydir, spec), emptydir))
    cases.append((lambda: prepare_image(broken / "b" / "bad.png", spec), broken / "b" / "bad.png"))
    big = tmp / "big.npy"
    np.save(big, np.full((8, 8), 255, np.uint8))  # a 0..255 image given to a digits model
    cases.append((lambda: prepare_image(big, spec), big))
    odd = tmp / "odd.npy"
    np.save(odd, np.zeros(50))
    cases.append((lambda: prepare_image(odd, spec), odd))
    return cases


def test_bad_data_raises_data_error_naming_the_culprit(tmp_path):
    for i, (call, culprit) in enumerate(bad_cases(tmp_path)):
        with pytest.raises(DataError) as info:
            call()
        assert str(culprit) in str(info.value), f"case {i}: {info.value}"


def test_spec_from_dict_missing_keys():
    with pytest.raises(DataError, match="std"):
        ImageSpec.from_dict({"channels": 1, "height": 8, "width": 8, "mean": [0.0]})
    with pytest.raises(DataError):
        ImageSpec(channels=2, height=8, width=8, mean=[0, 0], std=[1, 1])


def test_bad_options():
    with pytest.raises(ConfigError):
        load_digits_task(val_fraction=0.6, test_fraction=0.5)
