"""Object-detection data: generated "shapes" images (the default) or a COCO-format folder.

Shapes (``--task detection`` without ``--data``; drawn by `attnlab.data.shapes`): coloured
circles, squares and triangles on noisy, shaded backgrounds. Each split draws from its own
``SeedSequence([seed, split])``, so a run is reproducible without storing the images.

COCO (``--data annotations.json``, or a folder holding exactly one ``.json``): the
``images`` / ``annotations`` / ``categories`` lists of the COCO format (Lin et al. 2014),
``bbox`` = [x, y, width, height] in pixels, ``file_name`` relative to the JSON's folder (or
to ``image_dir``). Images are resized to ``image_size``; boxes are kept as fractions of the
image, which a plain resize leaves unchanged. ``iscrowd`` annotations are skipped. A box
outside its image, an unknown ``category_id`` or ``image_id``, or an unreadable image raises
a `DataError` naming the annotation id and the image file; so do an image whose ``width`` /
``height`` differ from its file's, a repeated image id, category id or category name, and a
file with no (non-crowd) box at all. The images are split into
train/val/test by ``seed``.

Items: ``(image, target)``; image (C, H, W) float32 normalised by the task's `ImageSpec`,
target (T, 5) float32 rows ``[label, cx, cy, w, h]`` (box in [0, 1]), padded with label -1
to T = the most objects any image of the data set holds, so the default collate batches
them: (B, C, H, W), (B, T, 5).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.data.base import ImageSpec, TaskData
from attnlab.data.item_random import ItemDraws
from attnlab.data.shapes import SHAPE_CLASSES, generate_shapes  # the default data, drawn in its own module
from attnlab.data.splits import check_fractions, split_counts
from attnlab.errors import ConfigError, DataError

__all__ = [
    "SHAPE_CLASSES",
    "DetectionDataset",
    "generate_shapes",
    "pad_targets",
    "read_coco",
    "write_coco",
    "load_shapes_task",
    "load_coco_task",
]

logger = logging.getLogger(__name__)

SHAPES_MEAN, SHAPES_STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
_BOX_TOLERANCE = 1.0  # pixels a COCO box may stick out of its image (rounding in exporters)


# --- targets --------------------------------------------------------------------------------


def pad_targets(boxes: list[np.ndarray], labels: list[np.ndarray], max_objects: int | None = None) -> Tensor:
    """Per-image boxes (k, 4) cxcywh in [0, 1] and labels (k,) -> padded (N, T, 5), label -1 = none."""
    t = max([len(b) for b in boxes] + [1]) if max_objects is None else max_objects
    out = torch.zeros(len(boxes), t, 5)
    out[:, :, 0] = -1
    for i, (b, l) in enumerate(zip(boxes, labels)):
        out[i, : len(b), 0] = torch.as_tensor(l, dtype=torch.float32)
        out[i, : len(b), 1:] = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)
    return out


class DetectionDataset(Dataset):
    """Images kept as uint8 (N, C, H, W), normalised on access; targets (N, T, 5).

    ``hflip``: mirror image and boxes with probability 1/2 per item, drawn from the generator
    of (``seed``, epoch, ``index``) (`attnlab.data.item_random`): the same with any number of
    DataLoader workers and in a resumed run, redrawn each epoch (``set_epoch``); for training
    splits only.
    """

    def __init__(self, images: Tensor, targets: Tensor, spec: ImageSpec, *, hflip: bool = False,
                 names: list[str] | None = None, seed: int = 0):
        if len(images) != len(targets):
            raise DataError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets, self.spec, self.hflip = images, targets, spec, hflip
        self.names = names or [f"#{i}" for i in range(len(images))]
        self.draws = ItemDraws(seed, len(images))

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose flips items draw (the trainer calls it before each epoch)."""
        self.draws.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.spec.normalise(self.images[index].float() / 255.0)  # (C, H, W)
        y = self.targets[index].clone()  # (T, 5)
        if self.hflip and bool(torch.rand((), generator=self.draws.generator(index)) < 0.5):
            x = x.flip(-1)
            real = y[:, 0] >= 0
            y[real, 1] = 1.0 - y[real, 1]
        return x, y


def _xyxy_pixels_to_cxcywh(boxes: np.ndarray, w: float, h: float) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h, (b[:, 2] - b[:, 0]) / w,
                     (b[:, 3] - b[:, 1]) / h], axis=1)


def _to_dataset(images: np.ndarray, boxes, labels, spec: ImageSpec, *, hflip: bool, max_objects: int,
                names: list[str] | None = None, seed: int = 0) -> DetectionDataset:
    """uint8 (N, H, W, 3) images and per-image boxes (k, 4) cxcywh, already fractions of their image."""
    chw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, 3, H, W) uint8
    return DetectionDataset(chw, pad_targets(boxes, labels, max_objects), spec, hflip=hflip, names=names, seed=seed)


def _task(name: str, train, val, test, class_names, spec: ImageSpec, info: dict[str, Any]) -> TaskData:
    data = TaskData(name, train, val, test, num_classes=len(class_names), class_names=list(class_names),
                    input_shape=spec.shape, metric="map_50", spec=spec, info=info)
    logger.info("loaded %s: %s", name, data.summary())
    return data


def load_shapes_task(
    *, seed: int = 0, image_size: int = 64, train_size: int = 6000, val_size: int = 300, test_size: int = 500,
    min_objects: int = 1, max_objects: int = 6, noise: float = 12.0, hflip: bool = True,
) -> TaskData:
    """The generated shapes data set (see the module docstring); splits drawn independently."""
    if min(train_size, val_size, test_size) < 1:
        raise ConfigError(f"shapes: split sizes must be >= 1, got {train_size}/{val_size}/{test_size}")
    spec = ImageSpec(3, image_size, image_size, SHAPES_MEAN, SHAPES_STD)
    splits = []
    for split, n in enumerate((train_size, val_size, test_size)):
        split_seed = int(np.random.SeedSequence([seed, split]).generate_state(1)[0])
        imgs, boxes, labels = generate_shapes(n, seed=split_seed, image_size=image_size, min_objects=min_objects,
                                              max_objects=max_objects, noise=noise)
        norm = [_xyxy_pixels_to_cxcywh(b, image_size, image_size) for b in boxes]  # pixels -> fractions
        splits.append(_to_dataset(imgs, norm, labels, spec, hflip=hflip and split == 0, max_objects=max_objects,
                                  seed=seed))
    info = {"source": "shapes", "image_size": image_size, "max_objects": max_objects, "min_objects": min_objects,
            "sizes": [train_size, val_size, test_size], "noise": noise}
    return _task("detection", *splits, SHAPE_CLASSES, spec, info)


# --- COCO format ------------------------------------------------------------------------------


def _coco_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
        if len(found) == 1:
            return found[0]
        raise DataError(f"{path}: expected exactly one COCO .json annotation file, found "
                        f"{'none' if not found else ', '.join(p.name for p in found)}; pass the file itself as --data")
    raise DataError(f"COCO data not found: {path}")


def read_coco(path: str | Path, *, image_dir: str | Path | None = None, image_size: tuple[int, int] = (96, 96),
              class_names: list[str] | None = None):
    """Read and check a COCO detection file; images resized to ``image_size`` (H, W).

    Returns (images uint8 (N, H, W, 3), boxes per image (k, 4) cxcywh in [0, 1], labels per
    image (k,), class names, file names). Raises `DataError` naming the bad entry. ``class_names``
    (a finished run's): categories labelled by name, not id order; one the run lacks is refused.
    """
    from attnlab.data.images import image_to_rgb, open_image

    file = _coco_file(Path(path))
    root = Path(image_dir) if image_dir is not None else file.parent
    try:
        coco = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read COCO file {file}: {e}") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"{file}: a COCO file needs lists 'images', 'annotations' and 'categories'")
    try:
        cats = sorted((_id(c["id"]), str(c["name"])) for c in coco["categories"])
        image_list = [(_id(im["id"]), im) for im in coco["images"]]
        names = {i: str(im["file_name"]) for i, im in image_list}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{file}: every category needs 'id' and 'name', every image 'id' and 'file_name' ({e!r})") from None
    if not cats:
        raise DataError(f"{file}: no categories")
    _check_unique(file, cats, image_list)
    images = dict(image_list)
    cat_index = {cid: k for k, (cid, _) in enumerate(cats)}
    if class_names is not None:
        unknown = [(cid, name) for cid, name in cats if name not in class_names]
        if unknown:
            raise DataError(f"{file}: category {unknown[0][0]} {unknown[0][1]!r} is not one of the run's classes {list(class_names)} "
                            f"(the file's categories: {[name for _, name in cats]})")
        cat_index, cats = {cid: list(class_names).index(name) for cid, name in cats}, list(enumerate(class_names))
    order = sorted(images)
    pixels, sizes = {}, {}
    for image_id in order:
        im_path = root / names[image_id]
        im = open_image(im_path) if im_path.is_file() else None
        if im is None:
            raise DataError(f"{file}: image id {image_id}: file {im_path} not found")
        sizes[image_id] = _image_size(file, image_id, images[image_id], im_path, im.size)
        pixels[image_id] = image_to_rgb(im, tuple(image_size), im_path)
    boxes: dict[int, list] = {i: [] for i in order}
    labels: dict[int, list] = {i: [] for i in order}
    for ann in coco["annotations"]:
        aid = ann.get("id", "?") if isinstance(ann, dict) else "?"
        try:
            image_id, cid = _id(ann["image_id"]), _id(ann["category_id"])
            x, y, bw, bh = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{file}: annotation {aid}: needs image_id, category_id and bbox [x, y, w, h] ({e!r})") from None
        if image_id not in images:
            raise DataError(f"{file}: annotation {aid}: image_id {image_id} is not in 'images'")
        where = f"{file}: annotation {aid} (image {names[image_id]})"
        if cid not in cat_index:
            raise DataError(f"{where}: unknown category_id {cid}; categories are {sorted(cat_index)}")
        if ann.get("iscrowd", 0):
            continue
        w, h = sizes[image_id]
        t = _BOX_TOLERANCE
        if not (bw > 0 and bh > 0) or x < -t or y < -t or x + bw > w + t or y + bh > h + t or not np.isfinite([x, y, bw, bh]).all():
            raise DataError(f"{where}: bbox [x, y, w, h] = {[x, y, bw, bh]} is empty or outside the {w:g}x{h:g} image")
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
        boxes[image_id].append(_xyxy_pixels_to_cxcywh(np.array([x0, y0, x1, y1]), w, h)[0])
        labels[image_id].append(cat_index[cid])
    if not any(labels.values()):
        what = "'annotations' is empty" if not coco["annotations"] else "every annotation is iscrowd, which training skips"
        raise DataError(f"{file}: no object to learn from ({what}); a detection task needs boxes")
    stacked = np.stack([pixels[i] for i in order]) if order else np.zeros((0, *image_size, 3), np.uint8)
    return (stacked, [np.asarray(boxes[i]).reshape(-1, 4) for i in order], [np.asarray(labels[i], np.int64) for i in order],
            [n for _, n in cats], [names[i] for i in order])


def _id(value: Any) -> int:
    """A COCO id: an integer (``int(7.9)`` would silently read 7: a ValueError names it)."""
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"id {value!r} is not an integer")
    return int(value)


def _check_unique(file: Path, cats: list[tuple[int, str]], images: list[tuple[int, Any]]) -> None:
    """Category ids, category names and image ids each name one thing: a repeated image id would
    silently keep one of its images, a repeated class name would give two classes one label."""
    for (a, name_a), (b, name_b) in zip(cats, cats[1:]):  # sorted by id
        if a == b:
            raise DataError(f"{file}: category id {a} is used twice ({name_a!r} and {name_b!r}); category ids must be unique")
    seen: dict[str, int] = {}
    for cid, name in cats:
        if name in seen:
            raise DataError(f"{file}: categories {seen[name]} and {cid} are both named {name!r}; class names must be unique")
        seen[name] = cid
    first: dict[int, Any] = {}
    for image_id, im in images:
        if image_id in first:
            raise DataError(f"{file}: image id {image_id} is used twice ({first[image_id].get('file_name')!s} and "
                            f"{im.get('file_name')!s}); image ids must be unique")
        first[image_id] = im


def _image_size(file: Path, image_id: int, entry: dict, path: Path, actual: tuple[int, int]) -> tuple[float, float]:
    """(width, height) of an image as the boxes are checked against: the JSON's, which must then be
    the file's own (else a box outside the real image would pass), or the file's where the JSON
    gives none."""
    given = {}
    for key in ("width", "height"):
        value = entry.get(key)
        if value is None:
            continue
        try:
            given[key] = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{file}: image id {image_id}: {key} {value!r} is not a number") from None
    w, h = given.get("width", float(actual[0])), given.get("height", float(actual[1]))
    if (w, h) != (float(actual[0]), float(actual[1])):
        # Images are read upright (EXIF orientation applied, as Detectron2 reads them): a JSON written
        # from the stored, unrotated pixels gives width and height swapped
        from attnlab.data.images import exif_turns

        turned = " upright (its EXIF orientation turns it; boxes must be in the upright image's pixels)" \
            if (w, h) == (float(actual[1]), float(actual[0])) and exif_turns(path) else ""
        raise DataError(f"{file}: image id {image_id}: the JSON says {w:g}x{h:g} (width x height) but {path} is "
                        f"{actual[0]}x{actual[1]}{turned}; fix 'width' and 'height' (boxes are in the file's pixels)")
    return w, h


def write_coco(folder: str | Path, images: np.ndarray, boxes: list[np.ndarray], labels: list[np.ndarray],
               class_names: list[str] | tuple[str, ...], *, name: str = "annotations.json") -> Path:
    """Write uint8 (N, H, W, 3) images as PNGs plus a COCO file (boxes xyxy in pixels). Returns the JSON."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    coco: dict[str, list] = {"images": [], "annotations": [],
                             "categories": [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]}
    for i, (img, b, l) in enumerate(zip(images, boxes, labels)):
        file_name = f"{i:05d}.png"
        Image.fromarray(img).save(folder / file_name)
        coco["images"].append({"id": i + 1, "file_name": file_name, "width": int(img.shape[1]), "height": int(img.shape[0])})
        for box, label in zip(np.asarray(b).reshape(-1, 4), l):
            x0, y0, x1, y1 = (float(v) for v in box)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                        "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    path = folder / name
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def load_coco_task(
    path: str | Path, *, seed: int = 0, image_dir: str | None = None, image_size: int = 96,
    val_fraction: float = 0.1, test_fraction: float = 0.2, hflip: bool = True, class_names: list[str] | None = None,
) -> TaskData:
    """A COCO-format file as a detection task: images split by ``seed`` into train/val/test.
    ``class_names``: a finished run's (evaluate, ``--resume``), matched to the categories by name."""
    check_fractions(val_fraction, test_fraction)
    images, boxes, labels, class_names, names = read_coco(path, image_dir=image_dir, image_size=(image_size, image_size),
                                                          class_names=class_names)
    n = len(images)
    if n < 3:
        raise DataError(f"{path}: {n} image(s); a detection task needs at least 3 (train, val, test)")
    n_val, n_test = split_counts(n, val_fraction, test_fraction)
    perm = np.random.default_rng(seed).permutation(n)
    parts = [np.sort(p) for p in (perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test])]
    if len(parts[1]) == 0:
        parts[1] = parts[0]  # nothing held out for validation: monitor on the training images
    spec = ImageSpec(3, image_size, image_size, SHAPES_MEAN, SHAPES_STD)
    t = max([len(b) for b in boxes] + [1])
    splits = [_to_dataset(images[idx], [boxes[i] for i in idx], [labels[i] for i in idx], spec, hflip=hflip and k == 0,
                          max_objects=t, names=[names[i] for i in idx], seed=seed) for k, idx in enumerate(parts)]
    info = {"source": "coco", "file": str(path), "image_size": image_size, "max_objects": t,
            "sizes": [len(p) for p in parts]}
    return _task("detection", *splits, class_names, spec, info)
