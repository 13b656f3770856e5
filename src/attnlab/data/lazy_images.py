"""Image files decoded on access, so memory does not grow with the number of images.

`ImageFileDataset` holds only paths and labels (as NumPy arrays, not Python lists: forked
DataLoader workers that touch Python objects' reference counts copy the pages they sit on,
which grows every worker's memory with the data set, PyTorch issue #13246). Each item is
decoded, resized and normalised in whichever process fetches it (a DataLoader worker when
``--train.num_workers`` > 0) through the same `attnlab.data.images` pipeline the in-memory
loader uses, so both give the same tensors bit for bit.

Normalisation statistics come from `PixelHistogram`: counts of the 256 uint8 values per
channel, accumulated one image at a time. Mean and std computed from counts are exact and need
O(1) memory, and the in-memory loader uses the same function, so the two paths agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnlab.data.base import FileDataset, ImageSpec, read_each
from attnlab.data.images import load_rgb, luma, scale_pixels
from attnlab.data.shard_targets import TargetDecoder
from attnlab.errors import DataError

__all__ = ["PixelHistogram", "PixelTable", "ImageFileDataset", "ImageSampleDecoder", "scan_images", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "bmp")  # what an image-folder sample may hold in a shard

# Each uint8 level scaled exactly as `scale_pixels` scales pixels, then widened: the values a histogram weights
_LEVELS = scale_pixels(np.arange(256, dtype=np.uint8), 255.0).double().numpy()


class PixelHistogram:
    """Counts of each uint8 value per RGB channel and for luma, over the images added.

    `stats` gives the per-channel mean and population std of the pixels scaled to [0, 1], as
    `attnlab.data.images.channel_stats` would over the stacked images, but from 4 x 256
    counters instead of every pixel.
    """

    def __init__(self) -> None:
        self.rgb = np.zeros((3, 256), np.int64)
        self.gray = np.zeros(256, np.int64)

    def add(self, rgb: np.ndarray) -> None:
        """Count one uint8 image (H, W, 3) (or a stack (..., H, W, 3))."""
        for c in range(3):
            self.rgb[c] += np.bincount(rgb[..., c].ravel(), minlength=256)
        self.gray += np.bincount(luma(rgb).ravel(), minlength=256)

    def stats(self, channels: int) -> tuple[list[float], list[float]]:
        """(mean, std) per channel for ``channels`` 3 (RGB) or 1 (luma); a constant channel gets std 1."""
        counts = self.rgb if channels == 3 else self.gray[None]
        means, stds = [], []
        for row in counts:
            n = int(row.sum())
            if n == 0:
                raise DataError("no training pixels to compute normalisation statistics from")
            mean = float(np.dot(row, _LEVELS) / n)
            std = float(np.sqrt(np.dot(row, (_LEVELS - mean) ** 2) / n))
            means.append(mean)
            stds.append(std if std > 1e-12 else 1.0)
        return means, stds


def scan_images(
    paths: Sequence[Path], count: np.ndarray, size: tuple[int, int], *, skip_bad: bool = False, keep: bool = False
) -> tuple[bool, PixelHistogram, list[int], np.ndarray | None]:
    """Decode each file once: (any colour image, histogram of the files where ``count`` is True,
    positions of unreadable files, and with ``keep`` the decoded uint8 images (N, H, W, 3),
    zeros where a file was unreadable; else None).

    An unreadable file raises the `DataError` naming it, or with ``skip_bad`` is logged and its
    position returned. Without ``keep`` memory stays O(1) in the number of files.
    """
    any_color, hist, bad = False, PixelHistogram(), []
    kept = np.zeros((len(paths), *size, 3), np.uint8) if keep else None
    for i, (rgb, color) in read_each(paths, lambda path: load_rgb(path, size), bad, skip_bad=skip_bad, what="image"):
        any_color = any_color or color
        if count[i]:
            hist.add(rgb)
        if kept is not None:
            kept[i] = rgb
    return any_color, hist, bad, kept


class PixelTable:
    """uint8 RGB (H, W, 3) -> the normalised input (C, H, W), as `rgb_to_input` computes it.

    The same float32 operations in the same order (widen, divide by 255, subtract the mean,
    divide by the std: all correctly rounded, so the numbers are equal bit for bit, which the
    tests check), but in place in NumPy, four array operations in all, instead of through
    tensor dispatch: a third of the per-item cost in a DataLoader worker. (A 256-entry lookup
    table per channel was exact too, but its gather with uint8 indices costs twice this.)

    Shape: rgb (H, W, 3) uint8 -> (C, H, W) float32.
    """

    def __init__(self, spec: ImageSpec):
        self.channels = spec.channels
        self.scale = np.float32(255.0)
        self.mean = np.asarray(spec.mean, np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        self.std = np.asarray(spec.std, np.float32).reshape(-1, 1, 1)

    def __call__(self, rgb: np.ndarray) -> Tensor:
        pixels = rgb if self.channels == 3 else luma(rgb)  # (H, W, C) uint8
        out = np.empty((self.channels, *pixels.shape[:2]), np.float32)  # (C, H, W)
        out[...] = pixels.transpose(2, 0, 1)
        out /= self.scale
        out -= self.mean
        out /= self.std
        return torch.from_numpy(out)


class ImageFileDataset(FileDataset):
    """``(x, y)`` pairs decoded from image files on each access (`FileDataset`: paths and labels only).

    ``paths[i]`` is decoded (`load_rgb`: libspng for plain PNGs, else Pillow with EXIF rotation
    applied), converted to RGB, resized to the spec's (H, W), reduced to luma for one channel,
    scaled by 1/255 and normalised with the spec: `attnlab.data.images`'s pipeline, shared with
    `prepare_image`.

    ``float_targets``: ``labels`` are multi-hot rows (N, K) (a label CSV, `attnlab.data.multilabel_images`).

    Shape: item x (C, H, W) float32, y () int64 (or (K,) float32).
    """

    what = "image"

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int] | np.ndarray, spec: ImageSpec, *,
                 indices: Tensor | None = None, float_targets: bool = False):
        super().__init__(paths, labels, indices=indices, float_targets=float_targets)
        self.spec = spec
        self.pixels = PixelTable(spec)

    @property
    def item_shape(self) -> tuple[int, int, int]:
        """(C, H, W): every item's x (DataLoader workers share fixed-shape batch slots)."""
        return self.spec.shape

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = str(self.paths[index])
        rgb, _ = load_rgb(path, (self.spec.height, self.spec.width))
        return self.pixels(rgb), self.y[index]


class ImageSampleDecoder:
    """A shard sample ``{"png"|"jpg"|...: encoded image, target member}`` -> ``(x, y)``,
    through the same pipeline as `ImageFileDataset` (a class, not a closure: spawned
    DataLoader workers receive it by value). ``positions``: see `ClassIndexTensors`;
    ``target``: the `TargetDecoder` of another target's member (a label set's ``.json``).

    Shape: -> x (C, H, W) float32, y () int64 (or (K,) float32 multi-hot).
    """

    def __init__(self, spec: ImageSpec, positions: list[int] | None = None, *, target: TargetDecoder | None = None):
        self.spec = spec
        self.pixels = PixelTable(spec)
        self.item_shape = spec.shape  # (C, H, W) of every decoded x
        self.target = target if target is not None else TargetDecoder("class", [], positions)
        self.labels = self.target.labels  # class targets: what ShardStream.class_labels reads

    def __call__(self, sample: dict[str, bytes], where: str) -> tuple[Tensor, Tensor]:
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if ext is None or self.target.member not in sample:
            raise DataError(f"{where}: a sample needs an image ({', '.join(IMAGE_EXTENSIONS)}) and {self.target.what} "
                            f"member, has {sorted(sample)}")
        rgb, _ = load_rgb(sample[ext], (self.spec.height, self.spec.width), name=where)
        return self.pixels(rgb), self.target(sample, where)
