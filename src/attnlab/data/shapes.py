"""Generated "shapes" images for object detection: the detection task's built-in data.

Coloured circles, squares and triangles (1-6 per image by default) on noisy, shaded
backgrounds, with tight boxes computed from the drawn pixels. Everything is a function of
``seed``. Objects overlap at most a little (``_MAX_OVERLAP`` of the smaller box), so every
labelled shape stays visible.
"""

from __future__ import annotations

import numpy as np

from attnlab.errors import ConfigError

__all__ = ["SHAPE_CLASSES", "generate_shapes"]

SHAPE_CLASSES = ("circle", "square", "triangle")
_MAX_OVERLAP = 0.2  # intersection / smaller box area allowed between two generated objects


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) bool mask of one shape, sampled at pixel centres."""
    c = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    y, x = np.meshgrid(c, c, indexing="ij")
    if kind == 0:  # circle
        return x * x + y * y <= 1.0
    if kind == 1:  # square
        return np.ones((size, size), dtype=bool)
    # triangle pointing up, down, left or right: apex at one edge's middle, base on the opposite edge
    u, v = [(x, y), (x, -y), (y, x), (y, -x)][int(rng.integers(4))]
    return (v >= -1) & (np.abs(u) <= (v + 1) / 2)


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(0, 255, 3)
    grad = rng.uniform(-40, 40, (2, 3))  # a linear shade across the image, per channel
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    return img, base


def _colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    for _ in range(100):  # keep shapes distinguishable from the background
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - background).sum() > 150:
            return colour
    return 255.0 - background


def generate_shapes(
    count: int, *, seed: int, image_size: int = 64, min_objects: int = 1, max_objects: int = 6,
    min_size: int | None = None, max_size: int | None = None, noise: float = 12.0,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``count`` images: uint8 (N, H, W, 3), per image boxes (k, 4) xyxy in pixels and labels (k,).

    Object sizes default to image_size * [10/64, 24/64]. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    s = image_size
    lo = min_size if min_size is not None else max(4, round(s * 10 / 64))
    hi = max_size if max_size is not None else round(s * 24 / 64)
    if not (1 <= min_objects <= max_objects) or not (2 <= lo <= hi <= s):
        raise ConfigError(f"shapes: need 1 <= min_objects <= max_objects and 2 <= min_size <= max_size <= image_size, "
                          f"got objects {min_objects}..{max_objects}, sizes {lo}..{hi}, image_size {s}")
    images = np.empty((count, s, s, 3), dtype=np.uint8)
    all_boxes, all_labels = [], []
    for i in range(count):
        img, base = _background(rng, s, s)
        boxes: list[list[float]] = []
        labels: list[int] = []
        for _ in range(int(rng.integers(min_objects, max_objects + 1))):
            for _attempt in range(30):
                size = int(rng.integers(lo, hi + 1))
                x0, y0 = (int(v) for v in rng.integers(0, s - size + 1, 2))
                kind = int(rng.integers(len(SHAPE_CLASSES)))
                mask = _shape_mask(kind, size, rng)
                ys, xs = np.nonzero(mask)
                box = [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1.0, y0 + ys.max() + 1.0]
                if all(_overlap(box, b) <= _MAX_OVERLAP for b in boxes):
                    img[y0 : y0 + size, x0 : x0 + size][mask] = _colour(rng, base)
                    boxes.append([float(v) for v in box])
                    labels.append(kind)
                    break
        img = img + rng.normal(0, noise, img.shape)
        images[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        all_boxes.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        all_labels.append(np.asarray(labels, dtype=np.int64))
    return images, all_boxes, all_labels


def _overlap(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller
