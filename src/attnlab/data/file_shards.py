"""A folder of files (images, audio) as WebDataset shards, and the shards back as streams.

`write_file_shards` takes a folder loader's result with ``lazy=True`` (`FileDataset` splits:
its file listing, split and statistics) and copies each file's bytes unchanged into
``<split>-NNNNNN.tar`` shards as ``KEY.<member>`` + its target member (``KEY.cls``, or for
a label CSV ``KEY.json`` ``{"labels": [...]}``: `attnlab.data.shard_targets`), KEY being the
file's position in the sorted file list (as ``indices`` in the folder loader). Training samples are shuffled
once at write time: a stream only shuffles shards and a buffer, and a folder lists its files
class by class. `open_file_streams` reads a shard folder, or the shards a pattern names
(`attnlab.data.shard_patterns`), back as `ShardStream` splits: train shuffled (shard order
and a buffer, by seed and epoch), val and test in order, each sample once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.data.base import FileDataset, TaskData
from attnlab.data.shard_patterns import open_shards
from attnlab.data.shard_targets import encode_target
from attnlab.data.shards import INDEX_NAME, ShardStream, write_split
from attnlab.errors import ConfigError, DataError

__all__ = ["write_file_shards", "open_file_streams"]

log = logging.getLogger(__name__)


def write_file_shards(task: TaskData, out_dir: str | Path, *, kind: str, member: str | None, fields: dict[str, Any],
                      shard_size: int = 1000, seed: int = 0, source: str = "") -> dict[str, Any]:
    """Write ``task`` (a ``kind`` folder loaded lazily) as shards in ``out_dir``; ``member`` is
    each file's member extension (None: the file's own suffix); ``fields`` go into the index
    beside the splits (the spec the streams decode with). ``seed`` shuffles the training
    samples. Returns the index written to ``out_dir/shards.json``."""
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}")
    if not isinstance(task.train, FileDataset):
        raise ConfigError(f"attnlab shard --task {kind} needs the folder loaded with lazy=True")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name in ("train", "val", "test"):
        ds = getattr(task, name)
        order = np.random.default_rng(seed).permutation(len(ds)) if name == "train" else np.arange(len(ds))
        splits[name] = write_split(out, name, _samples(ds, order, member, task), shard_size)
    index = {"format": "webdataset", "writer": "attnlab shard", "task": kind, "source": source,
             "target": task.target, "class_names": task.class_names, **fields, "seed": seed, "splits": splits,
             "sizes": {k: sum(e["count"] for e in v) for k, v in splits.items()},
             "skipped_files": task.info.get("skipped_files", [])}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")  # last: a folder without it is no shard set
    log.info("wrote %s shards to %s: %s", kind, out, index["sizes"])
    return index


def _samples(ds: FileDataset, order: np.ndarray, member: str | None, task: TaskData) -> Iterator[tuple[str, dict[str, bytes]]]:
    for i in order.tolist():
        path = Path(str(ds.paths[i]))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {ds.what} file {path}: {e}") from None
        ext = member or path.suffix.lower().lstrip(".")
        yield f"{int(ds.indices[i]):09d}", {ext: data, **encode_target(task.target, ds.y[i], task.class_names)}


def open_file_streams(source: str | Path, kind: str, decoder: Callable[[dict[str, Any]], Callable], *, seed: int = 0,
                      skip_bad: bool = False, shuffle_buffer: int = 1000) -> tuple[dict[str, Any], dict[str, ShardStream]]:
    """(index, {"train", "val", "test": stream}) for a ``kind`` shard folder or pattern;
    ``decoder(index)`` builds the sample decoder from the index (its spec)."""
    folder, index = open_shards(source, kind)
    decode = decoder(index)

    def stream(split: str, shuffle: bool) -> ShardStream:
        shards = [(str(folder / e["file"]), e["count"]) for e in index["splits"].get(split, [])]
        return ShardStream(shards, decode, shuffle=shuffle, buffer=shuffle_buffer, seed=seed, skip_bad=skip_bad)

    return index, {"train": stream("train", True), "val": stream("val", False), "test": stream("test", False)}
