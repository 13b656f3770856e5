"""COCO files refused by `read_coco`, each in one line naming the culprit: image sizes that are not
the files', no object at all, a repeated category name, category id or image id."""

from __future__ import annotations

import json

import pytest

from attnlab.data.detection import generate_shapes, read_coco, write_coco
from attnlab.errors import DataError


@pytest.fixture
def coco(tmp_path):
    images, boxes, labels = generate_shapes(4, seed=0, image_size=32, max_objects=2)
    path = write_coco(tmp_path / "coco", images, boxes, labels, ["circle", "square", "triangle"])
    return path, json.loads(path.read_text())


def _read(path, data):
    path.write_text(json.dumps(data))
    return read_coco(path, image_size=(16, 16))


def test_json_size_must_be_the_files(coco):
    path, data = coco
    data["images"][1].update(width=64, height=48)
    with pytest.raises(DataError, match=r"image id 2: the JSON says 64x48 \(width x height\) but .*00001\.png is 32x32"):
        _read(path, data)
    data["images"][1].update(width="wide", height=32)
    with pytest.raises(DataError, match=r"image id 2: width 'wide' is not a number"):
        _read(path, data)
    for im in data["images"]:  # no sizes at all: the files' are used
        im.pop("width"), im.pop("height")
    assert len(_read(path, data)[0]) == 4


def test_a_size_swapped_by_exif_rotation_says_so(coco):
    from PIL import Image

    path, data = coco
    im = data["images"][1]
    file = path.parent / im["file_name"]
    jpeg = file.with_suffix(".jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide x 32 high, shown turned 90 degrees: 32 x 40
    Image.new("RGB", (40, 32), (200, 10, 10)).save(jpeg, exif=exif)
    im.update(file_name=jpeg.name, width=40, height=32)  # the stored size: the boxes' pixels would be the stored ones
    with pytest.raises(DataError, match=r"JSON says 40x32 .* is 32x40 upright \(its EXIF orientation turns it"):
        _read(path, data)
    Image.new("RGB", (40, 32)).save(jpeg)  # no EXIF: the same mismatch, without the hint
    im.update(width=32, height=40)
    with pytest.raises(DataError, match=r"JSON says 32x40 \(width x height\) but .*\.jpg is 40x32; fix"):
        _read(path, data)


def test_no_object_to_learn_from(coco):
    path, data = coco
    with pytest.raises(DataError, match=r"no object to learn from \('annotations' is empty\)"):
        _read(path, {**data, "annotations": []})
    crowd = [{**a, "iscrowd": 1} for a in data["annotations"]]
    with pytest.raises(DataError, match="every annotation is iscrowd"):
        _read(path, {**data, "annotations": crowd})


def test_category_names_and_ids_are_unique(coco):
    path, data = coco
    cats = [dict(c) for c in data["categories"]]
    cats[2]["name"] = "circle"
    with pytest.raises(DataError, match=r"categories 1 and 3 are both named 'circle'"):
        _read(path, {**data, "categories": cats})
    cats = [dict(c) for c in data["categories"]]
    cats[2]["id"] = 2
    with pytest.raises(DataError, match=r"category id 2 is used twice"):
        _read(path, {**data, "categories": cats})


def test_a_repeated_image_id_is_named_even_without_annotations(coco):
    path, data = coco
    data["images"][3]["id"] = 1
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 4]  # the duplicate has no box
    with pytest.raises(DataError, match=r"image id 1 is used twice \(00000\.png and 00003\.png\)"):
        _read(path, data)
