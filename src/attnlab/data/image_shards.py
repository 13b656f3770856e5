"""An image folder as WebDataset shards, and back as a training task.

`write_image_shards` takes the folder loader's result (its one decoding pass: class folders, per-class split
by seed, normalisation statistics of the train split, colour check) and copies each file's
encoded bytes unchanged (`attnlab.data.file_shards`) into ``<split>-NNNNNN.tar`` shards as ``KEY.png|jpg|bmp`` + ``KEY.cls``,
KEY being the file's position in the sorted file list (as ``indices`` in the folder loader). A
multi-label CSV of label columns (`attnlab.data.multilabel_images`, loaded lazily) is written
the same way, each sample's label set as ``KEY.json`` ``{"labels": [...]}`` instead of a
``.cls`` (`attnlab.data.shard_targets`), read back as its multi-hot row in the run's label order.
Training samples are shuffled once at write time: a stream only shuffles shards and a buffer,
and a folder lists its images class by class. `load_image_shards` reads the folder back as
`ShardStream` splits that decode exactly as `ImageFileDataset` does, so the tensors are the
folder loader's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from attnlab.data.base import ImageSpec, TaskData
from attnlab.data.file_shards import open_file_streams, write_file_shards
from attnlab.data.images import fit_channel_stats
from attnlab.data.lazy_images import ImageSampleDecoder
from attnlab.data.shard_targets import TargetDecoder, check_target_of
from attnlab.data.targets import TARGET_METRICS
from attnlab.data.shards import class_positions
from attnlab.errors import DataError

__all__ = ["write_image_shards", "load_image_shards"]

log = logging.getLogger(__name__)


def write_image_shards(task: TaskData, out_dir: str | Path, *, shard_size: int = 1000, seed: int = 0,
                       source: str = "") -> dict[str, Any]:
    """Write an image folder, loaded with ``lazy=True`` (`ImageFileDataset` splits), as shards in
    ``out_dir``, each image under its own extension; ``seed`` shuffles the training samples.
    Returns the index written to ``out_dir/shards.json``."""
    return write_file_shards(task, out_dir, kind="images", member=None, fields={"spec": task.spec.to_dict()},
                             shard_size=shard_size, seed=seed, source=source)


def load_image_shards(source: str | Path, *, seed: int = 0, skip_bad: bool = False, shuffle_buffer: int = 1000,
                      class_names: Sequence[str] | None = None, spec: Mapping[str, Any] | None = None,
                      norm_stats: Mapping[str, Any] | None = None, target: str = "class") -> TaskData:
    """The shards in a folder (written by `write_image_shards`), or those a pattern names
    (`attnlab.data.shard_patterns`), as a task: train a shuffled `ShardStream` (shard order and
    a ``shuffle_buffer`` of samples, by seed and epoch), val and test read in order, each sample once.

    ``class_names`` and ``spec`` (a finished run's, carried by evaluate and ``--resume``): the
    samples' labels are class indices into the shards' class list, so they are relabelled by
    class name into the run's (shards that list its classes in another order, or only some of
    them, read as the folder they came from would); a class the run lacks is refused by name.
    The samples hold each image file's bytes as written, so they are decoded with the run's
    spec (size, channels and training statistics), exactly as the folder they came from would
    be read for the run, whatever spec the shards were written with. Without a run's spec,
    ``norm_stats`` (a pretrained checkpoint's, `fit_channel_stats`) replaces the shards' statistics.

    ``target``: the run's ``--data.target``, the one the shards were written with. A multi-label
    run's labels are matched by name as a label CSV's columns are: a label of the shards the run
    lacks is refused, and so is a run label the shards lack (it would be scored as never set).
    """
    run_spec = None if spec is None else ImageSpec.from_dict(spec)

    def shard_spec(written: Mapping[str, Any]) -> ImageSpec:
        if run_spec is not None:
            return run_spec
        if norm_stats is None:
            return ImageSpec.from_dict(written)
        mean, std = fit_channel_stats(norm_stats, int(written["channels"]))
        return ImageSpec.from_dict({**written, "mean": mean, "std": std})

    def decoder(index: dict[str, Any]) -> ImageSampleDecoder:
        if check_target_of(source, index, target) == "class":
            return ImageSampleDecoder(shard_spec(index["spec"]), class_positions(source, index["class_names"], class_names))
        class_positions(source, index["class_names"], class_names, noun="label")
        run = [str(n) for n in (index["class_names"] if class_names is None else class_names)]
        written = {str(m) for m in index["class_names"]}
        missing = [n for n in run if n not in written]
        if missing:
            raise DataError(f"{source}: the shards have no label {missing[0]!r} of the run's {run}; a label "
                            "left out would be scored as never set")
        return ImageSampleDecoder(shard_spec(index["spec"]), target=TargetDecoder(target, run))

    index, streams = open_file_streams(source, "images", decoder, seed=seed, skip_bad=skip_bad,
                                       shuffle_buffer=shuffle_buffer)
    names = [str(n) for n in (index["class_names"] if class_names is None else class_names)]
    used = streams["train"].decode.spec  # the spec the decoders were built with
    if used.to_dict() != index["spec"]:
        log.info("shards %s (written with %s) are decoded with the run's %s", source, index["spec"], used)
    data = TaskData("images", streams["train"], streams["val"], streams["test"], num_classes=len(names),
                    class_names=names, input_shape=used.shape, spec=used, target=target,
                    metric=TARGET_METRICS[target])
    data.info["shards"] = str(source)
    if target != "class":
        data.info["target"] = target  # as `load_multilabel_csv` records it
    log.info("images from shards %s: %s", source, data.summary())
    return data
