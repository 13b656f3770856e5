"""Label-CSV images (`attnlab.data.multilabel_images`): unreadable rows skipped with
``skip_bad`` without moving any other row between splits, and ``lazy`` (decoding on access)
giving the in-memory tensors bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.cli import main
from attnlab.data.targets import random_split
from attnlab.data.vision import load_image_folder_task
from attnlab.errors import DataError


def _table(root: Path, n: int = 20, bad: tuple[int, ...] = ()) -> tuple[Path, np.ndarray]:
    """A CSV of ``n`` grey 4x4 images (labels cat always, dog every other row); rows in ``bad`` truncated."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
    rows = ["path,cat,dog"]
    for i in range(n):
        Image.fromarray(pixels[i]).save(root / f"{i}.png")
        if i in bad:
            (root / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
        rows.append(f"{i}.png,1,{i % 2}")
    (root / "t.csv").write_text("\n".join(rows) + "\n")
    return root / "t.csv", pixels


def test_skip_bad_leaves_out_unreadable_rows_and_keeps_the_split(tmp_path):
    table, pixels = _table(tmp_path / "t", bad=(7,))
    with pytest.raises(DataError, match=r"cannot read image .*7\.png"):
        load_image_folder_task(table, target="multilabel", image_size=4)
    data = load_image_folder_task(table, target="multilabel", image_size=4, skip_bad=True)
    assert data.info["skipped_files"] == [str(tmp_path / "t" / "7.png")]
    expected = [p[p != 7] for p in random_split(20, seed=0, val_fraction=0.1, test_fraction=0.1)]
    for split, want in zip((data.train, data.val, data.test), expected):
        assert split.indices.tolist() == want.tolist()
        assert split.y.tolist() == [[1.0, float(i % 2)] for i in want.tolist()]
    train = pixels[expected[0]].astype(np.float64) / 255.0  # float64 reference statistics of the kept training images
    assert data.spec.mean == pytest.approx([train.mean()], abs=1e-6) and data.spec.std == pytest.approx([train.std()], abs=1e-6)
    reference = (pixels[expected[0][0]].astype(np.float64) / 255.0 - train.mean()) / train.std()
    torch.testing.assert_close(data.train.x[0, 0].double(), torch.from_numpy(reference), atol=1e-5, rtol=0)


def test_skip_bad_refuses_a_label_left_without_training_images(tmp_path):
    dog = [i for i in range(20) if i % 2]  # every 'dog' row unreadable
    table, _ = _table(tmp_path / "t", bad=tuple(dog))
    with pytest.raises(DataError, match=r"label 'dog' has no training images left after skipping 10 unreadable file"):
        load_image_folder_task(table, target="multilabel", image_size=4, skip_bad=True)


def _mixed_table(root: Path, n: int = 24) -> Path:
    """A CSV of ``n`` images of several sizes and modes (RGB, grey, palette; PNG and JPEG), three labels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = ["image,cat,dog,owl"]
    for i in range(n):
        h, w = (int(v) for v in rng.integers(5, 12, 2))
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3) if i % 3 != 1 else (h, w), dtype=np.uint8))
        im = im.convert("P") if i % 3 == 2 else im
        name = f"{i}.jpg" if i % 5 == 0 else f"{i}.png"
        (im.convert("RGB") if name.endswith(".jpg") else im).save(root / name)
        rows.append(f"{name},1,{i % 2},{int(i % 3 == 0)}")
    (root / "t.csv").write_text("\n".join(rows) + "\n")
    return root / "t.csv"


@pytest.mark.parametrize("channels", [None, 1])
def test_lazy_gives_the_in_memory_tensors(tmp_path, channels):
    """Decoding on access (paths and multi-hot rows only) equals decoding up front: the same
    splits, targets, statistics and inputs, bit for bit, a skipped unreadable row included."""
    from attnlab.data.lazy_images import ImageFileDataset

    table = _mixed_table(tmp_path / "t")
    (tmp_path / "t" / "4.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    kw = dict(target="multilabel", image_size=(6, 7), channels=channels, seed=3, skip_bad=True)
    eager, lazy = load_image_folder_task(table, lazy=False, **kw), load_image_folder_task(table, lazy=True, **kw)
    assert isinstance(lazy.train, ImageFileDataset) and not isinstance(eager.train, ImageFileDataset)
    assert lazy.spec == eager.spec and lazy.info == eager.info and lazy.class_names == eager.class_names == ["cat", "dog", "owl"]
    assert lazy.info["skipped_files"] == [str(tmp_path / "t" / "4.png")] and lazy.target == "multilabel"
    for split in ("train", "val", "test"):
        a, b = getattr(eager, split), getattr(lazy, split)
        assert a.indices.tolist() == b.indices.tolist() and 4 not in b.indices.tolist() and len(b) == len(a) > 0
        assert b.y.dtype == torch.float32 and torch.equal(a.y, b.y)
        for i in range(len(a)):
            (xa, ya), (xb, yb) = a[i], b[i]
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and yb.shape == (3,)
    rows = [line.split(",") for line in table.read_text().splitlines()[1:]]  # the targets, from the CSV itself
    assert lazy.test.y.tolist() == [[float(v) for v in rows[i][1:]] for i in lazy.test.indices.tolist()]


def test_lazy_by_default_past_the_size_budget(tmp_path, monkeypatch):
    import attnlab.data.vision as vision
    from attnlab.data.lazy_images import ImageFileDataset

    table, _ = _table(tmp_path / "t")  # 20 rows of 4x4 images
    assert not isinstance(load_image_folder_task(table, target="multilabel", image_size=4).train, ImageFileDataset)
    monkeypatch.setattr(vision, "LAZY_BYTES", 20 * 3 * 4 * 4 * 4)
    assert not isinstance(load_image_folder_task(table, target="multilabel", image_size=4).train, ImageFileDataset)
    monkeypatch.setattr(vision, "LAZY_BYTES", 19 * 3 * 4 * 4 * 4)
    assert isinstance(load_image_folder_task(table, target="multilabel", image_size=4).train, ImageFileDataset)


def test_lazy_trains_in_a_worker_from_the_cli(tmp_path):
    """``--data.lazy true --train.num_workers 1``: multi-hot rows travel through the shared batch
    slots (a class index is all they held before) and the run scores its test split."""
    import json

    table, _ = _table(tmp_path / "t")
    argv = ["train", "--task", "images", "--data", str(table), "--data.target", "multilabel", "--data.image_size", "4",
            "--data.lazy", "true", "--train.num_workers", "1", "--train.batch_size", "4", "--epochs", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["map"] <= 1.0, metrics
