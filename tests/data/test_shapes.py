"""The detection task's generated shapes (attnlab.data.shapes): deterministic, with tight boxes."""

from __future__ import annotations

import numpy as np

from attnlab.data.shapes import generate_shapes


def test_shapes_are_deterministic_and_boxes_are_tight():
    a_imgs, a_boxes, a_labels = generate_shapes(12, seed=3)
    b_imgs, b_boxes, b_labels = generate_shapes(12, seed=3)
    c_imgs, _, _ = generate_shapes(12, seed=4)
    assert np.array_equal(a_imgs, b_imgs) and all(np.array_equal(x, y) for x, y in zip(a_boxes, b_boxes))
    assert not np.array_equal(a_imgs, c_imgs)
    assert a_imgs.shape == (12, 64, 64, 3) and a_imgs.dtype == np.uint8
    for boxes, labels in zip(a_boxes, a_labels):
        assert 1 <= len(boxes) <= 6 and len(labels) == len(boxes)
        assert set(labels.tolist()) <= {0, 1, 2}
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 4).all()
    imgs96, boxes96, _ = generate_shapes(3, seed=0, image_size=96)
    assert imgs96.shape == (3, 96, 96, 3) and max(b.max() for b in boxes96) <= 96
