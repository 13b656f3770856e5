"""An image folder as WebDataset shards, and back as a training task.

`write_image_shards` takes the folder loader's result (its one decoding pass: class folders, per-class split
by seed, normalisation statistics of the train split, colour check) and copies each file's
encoded bytes unchanged into ``<split>-NNNNNN.tar`` shards as ``KEY.png|jpg|bmp`` + ``KEY.cls``,
KEY being the file's position in the sorted file list (as ``indices`` in the folder loader).
Training samples are shuffled once at write time: a stream only shuffles shards and a buffer,
and a folder lists its images class by class. `load_image_shards` reads the folder back as
`ShardStream` splits that decode exactly as `ImageFileDataset` does, so the tensors are the
folder loader's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.data.base import ImageSpec, TaskData
from attnlab.data.lazy_images import ImageFileDataset, ImageSampleDecoder
from attnlab.data.shard_patterns import open_shards
from attnlab.data.shards import INDEX_NAME, ShardStream, write_split
from attnlab.errors import ConfigError, DataError

__all__ = ["write_image_shards", "load_image_shards"]

log = logging.getLogger(__name__)


def write_image_shards(task: TaskData, out_dir: str | Path, *, shard_size: int = 1000, seed: int = 0,
                       source: str = "") -> dict[str, Any]:
    """Write an image folder, loaded with ``lazy=True`` (`ImageFileDataset` splits), as shards in
    ``out_dir``; ``seed`` shuffles the training samples. Returns the index written to
    ``out_dir/shards.json``."""
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}")
    if not isinstance(task.train, ImageFileDataset):
        raise ConfigError("write_image_shards needs an image folder loaded with lazy=True")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, ds in (("train", task.train), ("val", task.val), ("test", task.test)):
        order = np.arange(len(ds))
        if name == "train":
            order = np.random.default_rng(seed).permutation(len(ds))
        splits[name] = write_split(out, name, _samples(ds, order), shard_size)
    index = {"format": "webdataset", "writer": "attnlab shard", "task": "images", "source": source,
             "class_names": task.class_names, "spec": task.spec.to_dict(), "seed": seed, "splits": splits,
             "sizes": {k: sum(e["count"] for e in v) for k, v in splits.items()},
             "skipped_files": task.info.get("skipped_files", [])}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")  # last: a folder without it is no shard set
    log.info("wrote %s shards to %s: %s", "images", out, index["sizes"])
    return index


def _samples(ds, order: np.ndarray):
    for i in order.tolist():
        path = Path(str(ds.paths[i]))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        ext = path.suffix.lower().lstrip(".")
        yield f"{int(ds.indices[i]):09d}", {ext: data, "cls": str(int(ds.y[i])).encode()}


def load_image_shards(source: str | Path, *, seed: int = 0, skip_bad: bool = False, shuffle_buffer: int = 1000) -> TaskData:
    """The shards in a folder (written by `write_image_shards`), or those a pattern names
    (`attnlab.data.shard_patterns`), as a task: train a shuffled `ShardStream` (shard order and
    a ``shuffle_buffer`` of samples, by seed and epoch), val and test read in order, each sample once."""
    folder, index = open_shards(source, "images")
    spec = ImageSpec.from_dict(index["spec"])
    decode = ImageSampleDecoder(spec)

    def stream(split: str, shuffle: bool) -> ShardStream:
        shards = [(str(folder / e["file"]), e["count"]) for e in index["splits"].get(split, [])]
        return ShardStream(shards, decode, shuffle=shuffle, buffer=shuffle_buffer, seed=seed, skip_bad=skip_bad)

    names = list(index["class_names"])
    data = TaskData("images", stream("train", True), stream("val", False), stream("test", False), num_classes=len(names),
                    class_names=names, input_shape=spec.shape, spec=spec)
    data.info["shards"] = str(source)
    log.info("images from shards %s: %s", source, data.summary())
    return data
