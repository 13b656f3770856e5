"""Reading WebDataset tar shards as a stream: data larger than memory, read in order from disk.

A shard is a plain tar whose members ``KEY.EXT`` group into samples by ``KEY`` (the
WebDataset format, readable by the ``webdataset`` library and by ``tar``). attnlab writes them
with ``attnlab shard`` (`attnlab.data.shard_writer`) beside a ``shards.json`` index that lists
each split's shards with their sample counts, plus what the task needs (classes, image or
audio spec). Members hold encoded images, WAV files, UTF-8 text and targets only (a class
index, or a JSON label set or number: `attnlab.data.shard_targets`): nothing here unpickles.

`ShardStream` splits an epoch's samples exactly: the split's shards, in an order drawn from
(seed, epoch), form one sequence of ``total`` samples; rank r of W takes the contiguous range
``[r * n, (r + 1) * n)`` with ``n = total // W`` (the remainder is dropped, as
``DistributedSampler(drop_last=True)`` does), cut to whole batches, and DataLoader worker w
takes a contiguous run of those batches. So every rank yields the same number of batches
(DDP's all-reduce never waits on a rank that ran out) and no sample is read twice in an epoch;
with ``skip_bad`` a left-out sample can cost a rank a batch, and the trainer's ranks then agree
where the epoch ends (`attnlab.training.epoch_batches`).
Within a worker a buffer shuffles samples (seeded by seed, epoch, rank and worker). A
rank opens only the shards its range touches, skipping over the members before its start.

Evaluation (`evaluation_view`) reads every sample of the split once: no rank split, nothing
dropped, no padding, shards in their listed order.

Resume is at epoch boundaries: an epoch's order is a function of (seed, epoch), so a run
resumed from an end-of-epoch checkpoint reads the next epoch exactly as the uninterrupted run
would. Mid-epoch checkpoints are refused for streams (`attnlab.training.loaders`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import multiprocessing
import random
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from attnlab.data.base import TensorPairDataset
from attnlab.data.ustar import members

from attnlab.errors import DataError

__all__ = ["ShardStream", "class_positions", "read_samples", "write_split", "read_index", "is_shard_dir", "head", "skip_counts", "with_test_in_memory",
           "INDEX_NAME"]

log = logging.getLogger(__name__)


def class_positions(source: Any, names: Sequence[Any], run_classes: Sequence[Any] | None, *,
                    noun: str = "class") -> list[int]:
    """The position in a finished run's ``run_classes`` of each of ``names`` (the classes a folder or
    shards label by, in their own order): what relabels them by class name, so the model's output
    k is scored against class k whatever order the data listed its classes in. A name the run has
    no class for is a DataError naming it and the run's classes; a run class the data lacks is
    fine (it has no examples there). ``run_classes`` None (no run yet): ``names`` themselves, so
    that a decoder still refuses a label past them (`ClassIndexTensors`). ``noun``: what the
    names are in the message ("class", or a multi-label run's "label")."""
    run = [str(n) for n in (names if run_classes is None else run_classes)]
    unknown = [str(n) for n in names if str(n) not in run]
    if unknown:
        plural = "classes" if noun == "class" else f"{noun}s"
        raise DataError(f"{source}: the run has no {noun} {unknown[0]!r} (its {plural}: {run})")
    return [run.index(str(n)) for n in names]


INDEX_NAME = "shards.json"
FORBIDDEN_EXTENSIONS = frozenset({"pyd", "pickle", "pkl", "pth"})  # never read: they would need unpickling


def is_shard_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / INDEX_NAME).is_file()


def read_index(folder: str | Path, task: str) -> dict[str, Any]:
    """A shard folder's ``shards.json``, checked to be for ``task`` and to list existing shards."""
    path = Path(folder) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read shard index {path}: {e}") from None
    if index.get("task") != task:
        raise DataError(f"{path} holds shards of task {index.get('task')!r}, not {task!r}")
    for split in ("train", "val", "test"):
        for entry in index.get("splits", {}).get(split, []):
            if not (Path(folder) / entry["file"]).is_file():
                raise DataError(f"{path} lists {entry['file']}, which is missing from {folder}")
    return index


def write_split(out_dir: Path, split: str, samples: Iterator[tuple[str, dict[str, bytes]]], shard_size: int) -> list[dict]:
    """Write ``(key, {ext: bytes})`` samples into ``out_dir/<split>-000000.tar``, ... of at most
    ``shard_size`` samples each (WebDataset's `TarWriter`, fixed mtime: the same input gives the
    same bytes). Returns the index entries ``[{"file", "count"}]``."""
    import webdataset

    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    writer, file, count = None, None, 0

    def close() -> None:
        if writer is not None:
            writer.close()
            file.close()
            entries[-1]["count"] = count

    for key, sample in samples:
        if writer is None or count == shard_size:
            close()
            name = f"{split}-{len(entries):06d}.tar"
            entries.append({"file": name, "count": 0})
            file = open(out_dir / name, "wb")  # a file object: a path string would go through webdataset's URL opener
            # ustar headers and an integer mtime: a float mtime makes tarfile add a PAX header to
            # every member, doubling the headers a reader parses
            writer, count = webdataset.TarWriter(file, encoder=False, mtime=0, format=tarfile.USTAR_FORMAT), 0
        writer.write({"__key__": key, **sample})
        count += 1
    close()
    return entries


def read_samples(path: str | Path, skip: int = 0) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` for each sample of one shard, after skipping its first ``skip``
    samples without reading their contents. A truncated or unreadable tar raises a DataError
    naming the shard."""
    path = str(path)
    try:
        with open(path, "rb", buffering=1 << 20) as f:
            key, sample, seen = None, {}, 0
            for name, fetch in members(f):
                base = name.rsplit("/", 1)[-1]
                stem, _, ext = base.partition(".")
                if stem != key:
                    if key is not None:
                        if seen >= skip:
                            yield key, sample
                        seen += 1
                    key, sample = stem, {}
                if seen < skip:
                    continue  # not fetched: seeks past the content
                if ext.lower() in FORBIDDEN_EXTENSIONS:
                    raise DataError(f"{path}: member {name} is a pickle; attnlab shards hold no pickles")
                sample[ext.lower()] = fetch(True)
            if key is not None and seen >= skip:
                yield key, sample
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read shard {path}: {e or type(e).__name__}") from None


class ShardStream(IterableDataset):
    """One split of a sharded data set, as an iterable of decoded ``(x, y)`` items.

    ``shards``: (path, sample count) pairs in their listed order. ``decode(sample, where)``
    turns ``{ext: bytes}`` into an item (``where`` names the sample in errors, ``shard:key``).
    ``shuffle``: permute shards per epoch and shuffle within a ``buffer`` of samples (training).
    ``skip_bad``: a sample that cannot be decoded is logged and left out (counted in
    `skipped`; the unread rest of a truncated shard too) instead of stopping the run.
    """

    def __init__(self, shards: list[tuple[str, int]], decode: Callable[[dict[str, bytes], str], Any], *,
                 shuffle: bool = False, buffer: int = 1000, seed: int = 0, skip_bad: bool = False):
        self.shards = [(str(p), int(n)) for p, n in shards]
        self.total = sum(n for _, n in self.shards)
        self.decode, self.shuffle, self.buffer, self.seed, self.skip_bad = decode, shuffle, max(1, buffer), seed, skip_bad
        self.rank, self.world_size, self.batch_size = 0, 1, None
        # Shared with forked or spawned DataLoader workers: each adds the samples it skipped; and
        # the epoch, which persistent workers (holding their own copy of this object) read when
        # each epoch's iteration starts.
        self._skipped = multiprocessing.get_context().Value("q", 0)
        self._epoch = multiprocessing.get_context().Value("q", 0)

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        """The decoder's fixed x shape, if it has one (image and audio shards; text varies)."""
        shape = getattr(self.decode, "item_shape", None)
        return tuple(shape) if shape is not None else None

    def __len__(self) -> int:
        return self.total

    @property
    def skipped(self) -> int:
        """Samples left out as unreadable so far (a bad sample counts once per epoch that meets it)."""
        return int(self._skipped.value)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def set_distributed(self, rank: int, world_size: int, batch_size: int) -> None:
        """Training: rank ``rank`` of ``world_size`` yields whole batches of ``batch_size`` only."""
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size

    def num_batches(self, batch_size: int) -> int:
        """Full batches this rank yields per epoch: the same on every rank."""
        return (self.total // self.world_size) // batch_size

    def class_labels(self) -> list[int]:
        """Every sample's ``.cls`` class index, in listed order, read without decoding the rest
        (what ``--train.class_weights balanced`` counts), relabelled as the decoder relabels."""
        labels = []
        read = getattr(self.decode, "labels", None)  # a `ClassIndexTensors`: the run's indices, where it relabels
        for path, _ in self.shards:
            for key, sample in read_samples(path):
                if "cls" not in sample:
                    raise DataError(f"{path}:{key}: no .cls member: this stream has no class labels to count")
                labels.append(read.index(sample["cls"], f"{path}:{key}") if read is not None
                              else int(sample["cls"].decode("ascii")))
        return labels

    def in_memory(self, count: int) -> Any | None:
        """The split's first ``count`` readable items, in listed order, as a map-style dataset for
        what indexes examples (report.html): the decoder's own form where it has one
        (``decode.in_memory(samples, items)``; text keeps its strings for the page), else a
        `TensorPairDataset` of the stacked items. None when there is nothing to show, or the
        items differ in shape and the decoder has no form of its own. Reads ``count`` samples,
        never the split (a skipped bad sample counts as in `skipped`)."""
        view = self.evaluation_view()
        samples, items = [], []
        if count > 0:
            for where, sample in view._samples(0, view.total):
                item = view._decode(sample, where)
                if item is None:
                    continue
                samples.append(sample)
                items.append(item)
                if len(items) == count:
                    break
        if not items:
            return None
        make = getattr(self.decode, "in_memory", None)
        if make is not None:
            return make(samples, items)
        if len({tuple(item[0].shape) for item in items}) != 1 or any(len(item) != 2 for item in items):
            return None  # nothing to stack
        x, y = (torch.stack([item[k] for item in items]) for k in (0, 1))
        return TensorPairDataset(x, y, float_targets=y.is_floating_point())  # multi-hot rows stay 0/1 floats

    def evaluation_view(self) -> ShardStream:
        """The whole split once, in listed order, for this process alone (shares the skip count)."""
        view = copy.copy(self)  # shares the skip count and epoch (unused: a view does not shuffle)
        view.shuffle, view.rank, view.world_size, view.batch_size = False, 0, 1, None
        return view

    # ---- the plan: which global positions this rank and worker read --------------------
    def _order(self) -> list[tuple[str, int]]:
        if not self.shuffle:
            return list(self.shards)
        order = list(self.shards)
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return order

    def _range(self, worker: int, workers: int) -> tuple[int, int]:
        """[start, stop) in the epoch's sequence of samples for (this rank, ``worker``)."""
        if self.batch_size is None:  # evaluation: every sample, split between workers
            return self.total * worker // workers, self.total * (worker + 1) // workers
        per_rank = self.total // self.world_size
        batches = per_rank // self.batch_size
        first, last = batches * worker // workers, batches * (worker + 1) // workers
        base = self.rank * per_rank
        return base + first * self.batch_size, base + last * self.batch_size

    def _positions(self, start: int, stop: int) -> Iterator[tuple[str, int, int]]:
        """(shard, samples to skip in it, samples to read from it) covering [start, stop)."""
        offset = 0
        for path, count in self._order():
            lo, hi = max(start, offset), min(stop, offset + count)
            if lo < hi:
                yield path, lo - offset, hi - lo
            offset += count

    # ---- reading -------------------------------------------------------------------------
    def _samples(self, start: int, stop: int) -> Iterator[tuple[str, dict[str, bytes]]]:
        """(where, undecoded sample) for the positions [start, stop) of this epoch's sequence."""
        for path, skip, want in self._positions(start, stop):
            got = 0
            try:
                for key, sample in read_samples(path, skip):
                    if got == want:
                        break
                    got += 1
                    yield f"{path}:{key}", sample
            except DataError as e:  # the shard itself is unreadable (truncated, not a tar)
                if not self.skip_bad:
                    raise
                self._skip(want - got, e)
                continue
            if got < want:
                message = f"shard {path} holds fewer samples than its index says ({skip + got} < {skip + want})"
                if not self.skip_bad:
                    raise DataError(message)
                self._skip(want - got, message)

    def _decode(self, sample: dict[str, bytes], where: str) -> Any:
        try:
            return self.decode(sample, where)
        except DataError as e:
            if not self.skip_bad:
                raise
            self._skip(1, e)
            return None

    def _skip(self, count: int, why: Any) -> None:
        with self._skipped.get_lock():
            self._skipped.value += count
        log.warning("skipped %d sample(s): %s", count, why)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start, stop = self._range(worker, workers)
        samples = self._samples(start, stop)
        if self.shuffle:
            samples = _buffer_shuffle(samples, self.buffer, random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}"))
        for where, sample in samples:  # decoded after the shuffle: the buffer holds encoded bytes, not tensors
            item = self._decode(sample, where)
            if item is not None:
                yield item


def _buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random, initial: int = 100) -> Iterator[Any]:
    """Shuffle within a buffer of up to ``size`` items, as WebDataset's ``shuffle(bufsize, initial)``
    does: items flow out once ``initial`` are in, and the buffer grows by one with each item
    out until it holds ``size``. (Filling all ``size`` first made every epoch's first batch
    wait for ``size`` reads in each worker: 3% of a 1 s epoch in ``benchmarks/data_scale.py``.)"""
    initial = min(initial, size)
    buffer: list[Any] = []
    items = iter(items)
    for item in items:
        buffer.append(item)
        if len(buffer) < size:
            extra = next(items, _END)
            if extra is not _END:
                buffer.append(extra)
        if len(buffer) >= initial:
            j = rng.randrange(len(buffer))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


_END = object()


def head(dataset: Any, count: int) -> list:
    """The first ``count`` items of a split, map-style or a stream (read in order, once)."""
    if isinstance(dataset, IterableDataset):
        return list(itertools.islice(iter(dataset.evaluation_view()), count))
    return [dataset[i] for i in range(min(count, len(dataset)))]


def with_test_in_memory(task_data: Any, count: int) -> Any | None:
    """The task data as report builders index it (``test[i]``): a streamed test split becomes
    its first ``count`` items in memory (`ShardStream.in_memory`; None when it has none to
    show); map-style data is returned as it is."""
    if not isinstance(task_data.test, IterableDataset):
        return task_data
    test = task_data.test.in_memory(count)
    return None if test is None else dataclasses.replace(task_data, test=test)


def skip_counts(task_data: Any) -> dict[str, Any]:
    """What ``--data.skip_bad`` left out, for metrics.json: ``skipped_files`` (unreadable files of a
    lazy folder, logged by the loader) and ``skipped_samples`` per split of a stream (counted once
    per epoch that met them; logged here when any)."""
    out: dict[str, Any] = {}
    if "skipped_files" in task_data.info:
        out["skipped_files"] = len(task_data.info["skipped_files"])
    streams = {k: getattr(task_data, k) for k in ("train", "val", "test")}
    if any(hasattr(ds, "skipped") for ds in streams.values()):
        out["skipped_samples"] = {k: ds.skipped for k, ds in streams.items() if hasattr(ds, "skipped")}
        if any(out["skipped_samples"].values()):
            log.warning("skipped unreadable samples: %s", out["skipped_samples"])
    return out
