"""Detection data: the shapes task's items and the COCO reader (its errors included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnlab.tasks import load_task
from attnlab.data.detection import SHAPE_CLASSES, generate_shapes, load_coco_task, load_shapes_task, read_coco, write_coco
from attnlab.errors import ConfigError, DataError


def test_shapes_task_items_and_padding():
    data = load_task("detection", None, seed=0, train_size=10, val_size=3, test_size=4, image_size=32, max_objects=3)
    assert data.class_names == list(SHAPE_CLASSES) and data.metric == "map_50" and data.input_shape == (3, 32, 32)
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.shape == (3, 5)
    real = y[:, 0] >= 0
    assert real.any() and ((y[real, 1:] > 0) & (y[real, 1:] <= 1)).all()
    assert (y[~real, 0] == -1).all()
    again = load_task("detection", None, seed=0, train_size=10, val_size=3, test_size=4, image_size=32, max_objects=3)
    torch.testing.assert_close(again.test[0][1], y)
    with pytest.raises(ConfigError, match="has no option"):
        load_task("detection", None, seed=0, bogus=1)


def test_hflip_moves_boxes_with_the_image():
    data = load_shapes_task(seed=1, train_size=4, val_size=1, test_size=1, image_size=32, hflip=True)
    ds = data.train
    ds.hflip = False
    x0, y0 = ds[0]
    ds.hflip = True
    for epoch in range(20):  # a flip is drawn per (seed, epoch, index): the same at every fetch within an epoch
        ds.set_epoch(epoch)
        x1, y1 = ds[0]
        assert torch.equal(ds[0][0], x1)
        if not torch.equal(x1, x0):
            break
    torch.testing.assert_close(x1, x0.flip(-1))
    real = y0[:, 0] >= 0
    torch.testing.assert_close(y1[real, 1], 1 - y0[real, 1])
    torch.testing.assert_close(y1[real, 2:], y0[real, 2:])


def _coco(tmp_path, n=5):
    imgs, boxes, labels = generate_shapes(n, seed=0, image_size=48)
    path = write_coco(tmp_path / "coco", imgs, boxes, labels, SHAPE_CLASSES)
    return path, imgs, boxes, labels


def test_coco_round_trip(tmp_path):
    path, imgs, boxes, labels = _coco(tmp_path)
    images, nboxes, nlabels, names, files = read_coco(path, image_size=(48, 48))
    assert names == list(SHAPE_CLASSES) and files[0] == "00000.png"
    assert np.array_equal(images, imgs)
    b = boxes[0]
    expect = np.stack([(b[:, 0] + b[:, 2]) / 96, (b[:, 1] + b[:, 3]) / 96, (b[:, 2] - b[:, 0]) / 48, (b[:, 3] - b[:, 1]) / 48], 1)
    np.testing.assert_allclose(nboxes[0], expect)
    assert np.array_equal(nlabels[0], labels[0])
    data = load_task("detection", str(path.parent), seed=0, image_size=32, val_fraction=0.2, test_fraction=0.2)
    assert len(data.train) + len(data.val) + len(data.test) == 5 and data.input_shape == (3, 32, 32)
    assert data.train[0][1].shape[0] == max(len(b) for b in boxes)


def _edit(path, fn):
    coco = json.loads(path.read_text())
    fn(coco)
    path.write_text(json.dumps(coco))


def test_bad_coco_annotations_name_the_entry(tmp_path):
    path, *_ = _coco(tmp_path)
    ann = json.loads(path.read_text())["annotations"][2]
    image_file = f"{ann['image_id'] - 1:05d}.png"

    def outside(c):
        c["annotations"][2]["bbox"] = [40.0, 40.0, 20.0, 5.0]

    _edit(path, outside)
    with pytest.raises(DataError, match=rf"annotation {ann['id']} \(image {image_file}\).*outside the 48x48 image"):
        load_coco_task(path)
    path, *_ = _coco(tmp_path)

    def unknown(c):
        c["annotations"][2]["category_id"] = 99

    _edit(path, unknown)
    with pytest.raises(DataError, match=rf"annotation {ann['id']} \(image {image_file}\): unknown category_id 99"):
        load_coco_task(path)
    path, *_ = _coco(tmp_path)

    def fractional(c):
        c["annotations"][2]["category_id"] += 0.9  # int() read it as the category below, silently

    _edit(path, fractional)
    with pytest.raises(DataError, match=rf"annotation {ann['id']}: needs image_id, .*id .* is not an integer"):
        load_coco_task(path)
    path, *_ = _coco(tmp_path)
    _edit(path, lambda c: c["categories"][0].update(id=1.5))
    with pytest.raises(DataError, match=r"every category needs 'id' and 'name'.*id 1\.5 is not an integer"):
        load_coco_task(path)
    path, *_ = _coco(tmp_path)
    _edit(path, lambda c: c["images"][1].update(file_name="missing.png"))
    with pytest.raises(DataError, match="image id 2: file .*missing.png not found"):
        load_coco_task(path)
    _edit(path, lambda c: c.pop("annotations"))
    with pytest.raises(DataError, match="needs lists 'images', 'annotations' and 'categories'"):
        load_coco_task(path)
    (tmp_path / "coco" / "other.json").write_text("{}")
    with pytest.raises(DataError, match="exactly one COCO .json"):
        load_coco_task(tmp_path / "coco")


def test_coco_task_targets_are_the_json_boxes_as_fractions(tmp_path):
    """Each training target row is its annotation's [x, y, w, h] as (cx, cy, w, h) fractions of
    its image, whatever size the images are resized to (a box converted twice lands elsewhere)."""
    rng = np.random.default_rng(0)
    from PIL import Image

    folder = tmp_path / "coco"
    folder.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 9, "name": "b"}, {"id": 4, "name": "a"}]}
    for i, (w, h) in enumerate([(40, 24), (24, 24), (32, 16), (40, 40)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        coco["images"].append({"id": 50 + i, "file_name": f"{i}.png", "width": w, "height": h})
        for k, cid in enumerate((4, 9)):
            x, y, bw, bh = 2.0 + 3 * k + i, 1.0 + k, 6.0 + i, 5.0 + 2 * k
            coco["annotations"].append({"id": 10 * i + k, "image_id": 50 + i, "category_id": cid, "bbox": [x, y, bw, bh]})
    (folder / "ann.json").write_text(json.dumps(coco))
    data = load_coco_task(folder / "ann.json", image_size=16, val_fraction=0.25, test_fraction=0.25, hflip=False)
    assert data.class_names == ["a", "b"]  # sorted by category id: 4 -> 0, 9 -> 1
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in coco["images"]}
    seen = 0
    for split in (data.train, data.val, data.test):
        for j, name in enumerate(split.names):
            w, h = sizes[name]
            expect = sorted(
                [0.0 if a["category_id"] == 4 else 1.0, (a["bbox"][0] + a["bbox"][2] / 2) / w, (a["bbox"][1] + a["bbox"][3] / 2) / h,
                 a["bbox"][2] / w, a["bbox"][3] / h]
                for a in coco["annotations"] if a["image_id"] == 50 + int(name[0]))
            got = split[j][1]
            np.testing.assert_allclose(sorted(got[got[:, 0] >= 0].tolist()), expect, rtol=0, atol=1e-6)
            seen += 1
    assert seen == 4
