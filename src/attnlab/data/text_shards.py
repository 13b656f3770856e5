"""Text classification data (``label<TAB>text`` files) as WebDataset shards, and back as a task.

`write_text_shards` reads the files as `load_text_classification` does (its splits, its
tokenizer trained on the training split only), then writes each example as ``KEY.txt`` (UTF-8)
+ ``KEY.cls`` (class index) into ``<split>-NNNNNN.tar``, the training examples shuffled once,
and the tokenizer beside them in ``shards.json``. `load_text_shards` streams them back and
tokenizes each example on access (in DataLoader workers), so the ids equal the in-memory
loader's. Class targets only: regression and multi-label text stay in memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from attnlab.data.base import ClassIndexTensors, TaskData
from attnlab.data.shard_patterns import open_shards
from attnlab.data.shards import INDEX_NAME, ShardStream, class_positions, write_split
from attnlab.data.tokenizers import PAD_ID
from attnlab.errors import ConfigError, DataError

__all__ = ["write_text_shards", "load_text_shards", "TextSampleDecoder"]

log = logging.getLogger(__name__)


def write_text_shards(task: TaskData, out_dir: str | Path, *, shard_size: int = 1000, seed: int = 0,
                      source: str = "") -> dict[str, Any]:
    """Write a loaded text-classification task (`load_text_classification`) as shards in
    ``out_dir``; ``seed`` shuffles the training examples."""
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}")
    if task.target != "class":
        raise ConfigError(f"attnlab shard writes class-labelled text only, not --data.target {task.target}")
    out = Path(out_dir)
    splits = {}
    for name in ("train", "val", "test"):
        ds = getattr(task, name)
        order = np.random.default_rng(seed).permutation(len(ds)) if name == "train" else np.arange(len(ds))
        samples = ((f"{i:09d}", {"txt": ds.texts[i].encode("utf-8"), "cls": str(int(ds.y[i])).encode()})
                   for i in order.tolist())
        splits[name] = write_split(out, name, samples, shard_size)
    index = {"format": "webdataset", "writer": "attnlab shard", "task": "text-classification", "source": source,
             "class_names": task.class_names, "info": task.info, "seed": seed, "splits": splits,
             "sizes": {k: sum(e["count"] for e in v) for k, v in splits.items()}, "skipped_files": []}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return index


class TextSampleDecoder:
    """``{"txt": UTF-8 text, "cls": class index}`` -> ``(ids (n,) int64, label)``, tokenized by
    ``encode(tokenizer, texts, max_length)``: `attnlab.data.text.encode_for_classification`,
    passed in (text.py imports this module), as is ``dataset(ids, labels, texts)``, its
    `TokenClassificationDataset`, the in-memory form of a few examples (`in_memory`).
    ``positions``: see `ClassIndexTensors`."""

    def __init__(self, tokenizer: Any, max_length: int, encode: Callable, dataset: Callable | None = None,
                 positions: list[int] | None = None):
        self.tokenizer, self.max_length, self.encode, self.dataset = tokenizer, max_length, encode, dataset
        self.labels = ClassIndexTensors(positions)

    def __call__(self, sample: dict[str, bytes], where: str) -> tuple[Tensor, Tensor]:
        text = self._text(sample, where)
        if "cls" not in sample:
            raise DataError(f"{where}: a text sample needs UTF-8 .txt and an integer .cls (no .cls member)")
        ids = self.encode(self.tokenizer, [text], self.max_length)[0]
        return torch.tensor(ids, dtype=torch.long), self.labels(sample["cls"], where)

    @staticmethod
    def _text(sample: dict[str, bytes], where: str) -> str:
        try:
            return sample["txt"].decode("utf-8")
        except (KeyError, UnicodeDecodeError) as e:
            raise DataError(f"{where}: a text sample needs UTF-8 .txt and an integer .cls ({type(e).__name__}: {e})") from None

    def in_memory(self, samples: list[dict[str, bytes]], items: list[tuple[Tensor, Tensor]]) -> Any:
        """A few decoded examples (`ShardStream.in_memory`) as the in-memory loader holds them:
        ids, labels and their texts (the report titles its examples with them); None without a
        ``dataset`` to hold them."""
        if self.dataset is None:
            return None
        texts = [self._text(sample, "") for sample in samples]
        return self.dataset([ids.tolist() for ids, _ in items], [int(y) for _, y in items], texts)


def load_text_shards(source: str | Path, *, encode: Callable, collate: Callable, dataset: Callable | None = None,
                     seed: int = 0, skip_bad: bool = False, shuffle_buffer: int = 1000,
                     class_names: Sequence[str] | None = None) -> TaskData:
    """The shards in a folder (written by `write_text_shards`), or those a pattern names
    (`attnlab.data.shard_patterns`), as a text-classification task; ``encode`` and
    ``collate(pad_id)`` are `attnlab.data.text`'s, as is ``dataset`` (`TextSampleDecoder`).
    ``class_names`` (a finished run's): the samples are relabelled by class name into the run's
    classes, as a text file is read for it (a class the run lacks is refused by name)."""
    from attnlab.data.tokenizers import load_tokenizer

    folder, index = open_shards(source, "text-classification")
    info = dict(index["info"])
    tok = load_tokenizer(info["tokenizer"])
    positions = class_positions(source, index["class_names"], class_names)
    decode = TextSampleDecoder(tok, int(info["max_length"]), encode, dataset, positions)

    def stream(split: str, shuffle: bool) -> ShardStream:
        shards = [(str(folder / e["file"]), e["count"]) for e in index["splits"].get(split, [])]
        return ShardStream(shards, decode, shuffle=shuffle, buffer=shuffle_buffer, seed=seed, skip_bad=skip_bad)

    names = [str(n) for n in (index["class_names"] if class_names is None else class_names)]
    task = TaskData(task="text-classification", train=stream("train", True), val=stream("val", False),
                    test=stream("test", False), num_classes=len(names), class_names=names,
                    input_shape=(int(info["max_length"]),), info={**info, "shards": str(source)}, target="class",
                    collate_fn=collate(getattr(tok, "pad_id", PAD_ID)))
    task.files = {"tokenizer.json": tok.to_json()}
    return task
