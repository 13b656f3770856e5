"""An audio folder as WebDataset shards, and back as a training task.

`write_audio_shards` takes the folder loader's result (with ``lazy=True``: its file listing,
split by FSDD index or per class by seed, and the train split's statistics when the features
are normalised by "dataset") and copies each file's bytes unchanged (`attnlab.data.file_shards`) into
``<split>-NNNNNN.tar`` shards as ``KEY.wav`` + ``KEY.cls``, KEY being the file's position in
the sorted file list (as ``indices`` in the folder loader). Training samples are shuffled once
at write time: a stream only shuffles shards and a buffer, and a folder lists its files class
by class. `load_audio_shards` reads the folder (or the shards a pattern names) back as `ShardStream` splits that decode exactly
as `AudioFileDataset` does, so the tensors are the folder loader's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from attnlab.data.audio_features import AudioSpec
from attnlab.data.base import TaskData
from attnlab.data.file_shards import open_file_streams, write_file_shards
from attnlab.data.lazy_audio import AudioSampleDecoder
from attnlab.data.shards import class_positions

__all__ = ["write_audio_shards", "load_audio_shards"]

log = logging.getLogger(__name__)


def write_audio_shards(task: TaskData, out_dir: str | Path, *, shard_size: int = 1000, seed: int = 0,
                       source: str = "") -> dict[str, Any]:
    """Write an audio folder, loaded with ``lazy=True`` (`AudioFileDataset` splits), as shards in
    ``out_dir`` (``KEY.wav`` members); ``seed`` shuffles the training samples. Returns the index
    written to ``out_dir/shards.json``."""
    info = {k: v for k, v in task.info.items() if k in ("audio", "layout", "root", "splits")}
    return write_file_shards(task, out_dir, kind="audio", member="wav", fields={"info": info},
                             shard_size=shard_size, seed=seed, source=source)


def load_audio_shards(source: str | Path, *, seed: int = 0, skip_bad: bool = False, shuffle_buffer: int = 1000,
                      batch_augment: Callable[[Tensor], Tensor] | None = None,
                      class_names: Sequence[str] | None = None) -> TaskData:
    """The shards in a folder (written by `write_audio_shards`), or those a pattern names, as an
    audio task: train a shuffled `ShardStream` (shard order and a ``shuffle_buffer`` of samples,
    by seed and epoch), val and test read in order, each sample once. The feature settings (and
    dataset statistics) are the ones fixed when the shards were written; ``batch_augment``
    (`SpecAugment`) is the training run's. ``class_names`` (a finished run's): the samples are
    relabelled by class name into the run's classes, as an audio folder is (a class the run
    lacks is refused by name)."""

    def decoder(index: dict[str, Any]) -> AudioSampleDecoder:
        positions = class_positions(source, index["class_names"], class_names)
        return AudioSampleDecoder(AudioSpec.from_dict(index["info"]["audio"]), positions)

    index, streams = open_file_streams(source, "audio", decoder, seed=seed, skip_bad=skip_bad,
                                       shuffle_buffer=shuffle_buffer)
    info = dict(index["info"])
    spec = AudioSpec.from_dict(info["audio"])
    names = [str(n) for n in (index["class_names"] if class_names is None else class_names)]
    data = TaskData("audio", streams["train"], streams["val"], streams["test"], num_classes=len(names),
                    class_names=names, input_shape=spec.shape, batch_augment=batch_augment,
                    info={**info, "shards": str(source)})
    log.info("audio from shards %s: %s", source, data.summary())
    return data
