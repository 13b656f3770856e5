"""An audio folder as WebDataset shards, and back as a training task.

`write_audio_shards` takes the folder loader's result (with ``lazy=True``: its file listing,
split by FSDD index or per class by seed, and the train split's statistics when the features
are normalised by "dataset") and copies each file's bytes unchanged into
``<split>-NNNNNN.tar`` shards as ``KEY.wav`` + ``KEY.cls``, KEY being the file's position in
the sorted file list (as ``indices`` in the folder loader). Training samples are shuffled once
at write time: a stream only shuffles shards and a buffer, and a folder lists its files class
by class. `load_audio_shards` reads the folder back as `ShardStream` splits that decode exactly
as `AudioFileDataset` does, so the tensors are the folder loader's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from attnlab.data.audio_features import AudioSpec
from attnlab.data.base import TaskData
from attnlab.data.lazy_audio import AudioFileDataset, AudioSampleDecoder
from attnlab.data.shards import INDEX_NAME, ShardStream, read_index, write_split
from attnlab.errors import ConfigError, DataError

__all__ = ["write_audio_shards", "load_audio_shards"]

log = logging.getLogger(__name__)


def write_audio_shards(task: TaskData, out_dir: str | Path, *, shard_size: int = 1000, seed: int = 0,
                       source: str = "") -> dict[str, Any]:
    """Write an audio folder, loaded with ``lazy=True`` (`AudioFileDataset` splits), as shards in
    ``out_dir``; ``seed`` shuffles the training samples. Returns the index written to
    ``out_dir/shards.json``."""
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}")
    if not isinstance(task.train, AudioFileDataset):
        raise ConfigError("write_audio_shards needs an audio folder loaded with lazy=True")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name in ("train", "val", "test"):
        ds = getattr(task, name)
        order = np.random.default_rng(seed).permutation(len(ds)) if name == "train" else np.arange(len(ds))
        splits[name] = write_split(out, name, _samples(ds, order), shard_size)
    info = {k: v for k, v in task.info.items() if k in ("audio", "layout", "root", "splits")}
    index = {"format": "webdataset", "writer": "attnlab shard", "task": "audio", "source": source,
             "class_names": task.class_names, "info": info, "seed": seed, "splits": splits,
             "sizes": {k: sum(e["count"] for e in v) for k, v in splits.items()},
             "skipped_files": task.info.get("skipped_files", [])}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")  # last: a folder without it is no shard set
    log.info("wrote %s shards to %s: %s", "audio", out, index["sizes"])
    return index


def _samples(ds: AudioFileDataset, order: np.ndarray):
    for i in order.tolist():
        path = Path(str(ds.paths[i]))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read audio file {path}: {e}") from None
        yield f"{int(ds.indices[i]):09d}", {"wav": data, "cls": str(int(ds.y[i])).encode()}


def load_audio_shards(folder: str | Path, *, seed: int = 0, skip_bad: bool = False, shuffle_buffer: int = 1000,
                      batch_augment: Callable[[Tensor], Tensor] | None = None) -> TaskData:
    """The shards in ``folder`` (written by `write_audio_shards`) as an audio task: train a
    shuffled `ShardStream` (shard order and a ``shuffle_buffer`` of samples, by seed and epoch),
    val and test read in order, each sample once. The feature settings (and dataset statistics)
    are the ones fixed when the shards were written; ``batch_augment`` (`SpecAugment`) is the
    training run's."""
    folder = Path(folder)
    index = read_index(folder, "audio")
    info = dict(index["info"])
    spec = AudioSpec.from_dict(info["audio"])
    decode = AudioSampleDecoder(spec)

    def stream(split: str, shuffle: bool) -> ShardStream:
        shards = [(str(folder / e["file"]), e["count"]) for e in index["splits"].get(split, [])]
        return ShardStream(shards, decode, shuffle=shuffle, buffer=shuffle_buffer, seed=seed, skip_bad=skip_bad)

    names = list(index["class_names"])
    data = TaskData("audio", stream("train", True), stream("val", False), stream("test", False), num_classes=len(names),
                    class_names=names, input_shape=spec.shape, batch_augment=batch_augment,
                    info={**info, "shards": str(folder)})
    log.info("audio from shards %s: %s", folder, data.summary())
    return data
