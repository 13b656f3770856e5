"""Label-CSV images (`attnlab.data.multilabel_images`): unreadable rows skipped with
``skip_bad`` without moving any other row between splits, and ``lazy`` refused by name."""

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


def test_lazy_is_refused_in_one_line(tmp_path, capsys):
    table, _ = _table(tmp_path / "t")
    argv = ["train", "--task", "images", "--data", str(table), "--data.target", "multilabel", "--data.image_size", "4",
            "--data.lazy", "true", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--data.lazy true does not apply to --data.target multilabel" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
    assert len(load_image_folder_task(table, target="multilabel", image_size=4, lazy=False).train) == 16
