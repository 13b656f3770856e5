"""Image folders decoded on access: the same tensors as the in-memory loader, statistics from
histograms equal to ones computed over every pixel, unreadable files named or skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from attnlab.data.images import channel_stats, scale_pixels
from attnlab.data.lazy_images import ImageFileDataset, PixelHistogram
from attnlab.data.vision import load_image_folder_task
from attnlab.errors import DataError


def _folder(root: Path, seed: int = 0) -> list[Path]:
    """Three classes of grey and colour PNGs, a JPEG, a BMP and one image needing a resize."""
    rng = np.random.default_rng(seed)
    files = []
    for c, name in enumerate(["ant", "bee", "cat"]):
        (root / name).mkdir(parents=True)
        for k in range(6):
            shape = (10, 12, 3) if (k + c) % 3 == 0 else (10, 12)
            path = root / name / f"{k}.png"
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
            files.append(path)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "bee" / "big.jpg")
    Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)).save(root / "cat" / "x.bmp")
    return files


@pytest.mark.parametrize("channels", [None, 1])
def test_lazy_folder_gives_the_eager_tensors(tmp_path, channels):
    _folder(tmp_path)
    eager = load_image_folder_task(tmp_path, image_size=(10, 12), channels=channels, lazy=False)
    lazy = load_image_folder_task(tmp_path, image_size=(10, 12), channels=channels, lazy=True)
    assert isinstance(lazy.train, ImageFileDataset) and not isinstance(eager.train, ImageFileDataset)
    assert lazy.spec == eager.spec and lazy.class_names == eager.class_names
    for a, b in ((eager.train, lazy.train), (eager.val, lazy.val), (eager.test, lazy.test)):
        assert torch.equal(a.indices, b.indices) and len(a) == len(b) > 0
        for i in range(len(a)):
            xa, ya = a[i]
            xb, yb = b[i]
            assert torch.equal(xa, xb), f"item {i} differs"
            assert int(ya) == int(yb)


def test_lazy_folder_in_two_workers_matches_eager_batches(tmp_path):
    _folder(tmp_path)
    eager = load_image_folder_task(tmp_path, image_size=(10, 12), lazy=False)
    lazy = load_image_folder_task(tmp_path, image_size=(10, 12), lazy=True)
    got = list(DataLoader(lazy.train, batch_size=4, num_workers=2))
    want = list(DataLoader(eager.train, batch_size=4))
    assert len(got) == len(want) == -(-len(eager.train) // 4)
    for (xg, yg), (xw, yw) in zip(got, want):
        assert torch.equal(xg, xw) and torch.equal(yg, yw)


@pytest.mark.parametrize("channels", [3, 1])
def test_histogram_stats_match_stats_over_every_pixel(channels):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (7, 9, 11, 3), dtype=np.uint8)
    rgb[0] = 255  # skewed values: a naive float32 sum would drift
    hist = PixelHistogram()
    for image in rgb:
        hist.add(image)
    mean, std = hist.stats(channels)
    pixels = rgb if channels == 3 else (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)[..., None]
    # The reference: float64 stats over the stacked, scaled images (luma via PIL's "L" formula, +-1 level off at most)
    ref_mean, ref_std = channel_stats(scale_pixels(np.moveaxis(pixels, -1, 1), 255.0))
    tol = 1e-12 if channels == 3 else 2e-3
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=tol)
    np.testing.assert_allclose(std, ref_std, rtol=0, atol=tol)


def test_unreadable_file_is_named_or_skipped(tmp_path):
    files = _folder(tmp_path)
    bad = tmp_path / "bee" / "3.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated mid-stream
    for lazy in (False, True):
        with pytest.raises(DataError, match=str(bad)):
            load_image_folder_task(tmp_path, image_size=(10, 12), lazy=lazy)
    task = load_image_folder_task(tmp_path, image_size=(10, 12), lazy=True, skip_bad=True)
    assert task.info["skipped_files"] == [str(bad)]
    kept = torch.cat([task.train.indices, task.val.indices, task.test.indices]).sort().values
    position = sorted(p for d in sorted(tmp_path.iterdir()) for p in sorted(d.iterdir())).index(bad)
    assert len(kept) == len(files) + 2 - 1 and position not in kept.tolist()


def test_file_gone_after_loading_raises_naming_it(tmp_path):
    _folder(tmp_path)
    task = load_image_folder_task(tmp_path, image_size=(10, 12), lazy=True)
    victim = Path(str(task.train.paths[0]))
    victim.write_bytes(b"")
    with pytest.raises(DataError, match=str(victim)):
        task.train[0]


def test_lazy_by_default_past_the_size_budget(tmp_path, monkeypatch):
    import attnlab.data.vision as vision

    _folder(tmp_path)
    assert not isinstance(load_image_folder_task(tmp_path, image_size=(10, 12)).train, ImageFileDataset)
    monkeypatch.setattr(vision, "LAZY_BYTES", 20 * 3 * 10 * 12 * 4)  # 20 decoded images; the folder has 20
    assert not isinstance(load_image_folder_task(tmp_path, image_size=(10, 12)).train, ImageFileDataset)
    monkeypatch.setattr(vision, "LAZY_BYTES", 19 * 3 * 10 * 12 * 4)
    assert isinstance(load_image_folder_task(tmp_path, image_size=(10, 12)).train, ImageFileDataset)


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_table_equals_the_pipeline(channels):
    """Every uint8 level of every channel, under fresh random statistics: equal bit for bit."""
    from attnlab.data.base import ImageSpec
    from attnlab.data.images import rgb_to_input
    from attnlab.data.lazy_images import PixelTable

    rng = np.random.default_rng(channels)
    for _ in range(5):
        spec = ImageSpec(channels, 16, 16, rng.uniform(0.0, 1.0, channels), rng.uniform(0.01, 0.5, channels))
        rgb = np.stack([rng.permutation(256).astype(np.uint8).reshape(16, 16) for _ in range(3)], axis=-1)
        assert torch.equal(PixelTable(spec)(rgb), rgb_to_input(rgb, spec))
        odd = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
        assert torch.equal(PixelTable(spec)(odd), rgb_to_input(odd, spec))
