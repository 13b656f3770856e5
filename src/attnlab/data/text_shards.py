"""Text classification data (``label<TAB>text`` files) as WebDataset shards, and back as a task.

`write_text_shards` reads the files as `load_text_classification` does (its splits, its
tokenizer trained on the training split only, its ``--data.target``), then writes each example
as ``KEY.txt`` (UTF-8) + its target member (`attnlab.data.shard_targets`: ``KEY.cls`` a class
index, or ``KEY.json`` a label set ``{"labels": [...]}`` or a number ``{"value": 3.5}``) into
``<split>-NNNNNN.tar``, the training examples shuffled once, and the tokenizer (and a
regression target's scaler, fitted on the training split) beside them in ``shards.json``.
`load_text_shards` streams them back and tokenizes each example on access (in DataLoader
workers), so the ids and targets equal the in-memory loader's, bit for bit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from attnlab.data.base import TaskData
from attnlab.data.shard_patterns import open_shards
from attnlab.data.shard_targets import TargetDecoder, check_target_of, encode_target, scaler_of
from attnlab.data.targets import TARGET_METRICS
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
    out = Path(out_dir)
    splits = {}
    for name in ("train", "val", "test"):
        ds = getattr(task, name)
        order = np.random.default_rng(seed).permutation(len(ds)) if name == "train" else np.arange(len(ds))
        samples = ((f"{i:09d}", {"txt": ds.texts[i].encode("utf-8"),
                                 **encode_target(task.target, ds.y[i], task.class_names)}) for i in order.tolist())
        splits[name] = write_split(out, name, samples, shard_size)
    index = {"format": "webdataset", "writer": "attnlab shard", "task": "text-classification", "source": source,
             "target": task.target, "class_names": task.class_names, "info": task.info, "seed": seed, "splits": splits,
             "sizes": {k: sum(e["count"] for e in v) for k, v in splits.items()}, "skipped_files": []}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return index


class TextSampleDecoder:
    """``{"txt": UTF-8 text, target member}`` -> ``(ids (n,) int64, y)``, tokenized by
    ``encode(tokenizer, texts, max_length)``: `attnlab.data.text.encode_for_classification`,
    passed in (text.py imports this module), as is ``dataset(ids, labels, texts)``, its
    `TokenClassificationDataset`, the in-memory form of a few examples (`in_memory`).
    ``target``: the `TargetDecoder` of the samples' ``.cls`` or ``.json`` member.

    Shape: -> ids (n,) int64, y () int64 class, () float32 value or (K,) float32 multi-hot.
    """

    def __init__(self, tokenizer: Any, max_length: int, encode: Callable, dataset: Callable | None = None,
                 target: TargetDecoder | None = None):
        self.tokenizer, self.max_length, self.encode, self.dataset = tokenizer, max_length, encode, dataset
        self.target = target if target is not None else TargetDecoder("class", [])
        self.labels = self.target.labels  # class targets: what ShardStream.class_labels reads

    def __call__(self, sample: dict[str, bytes], where: str) -> tuple[Tensor, Tensor]:
        text = self._text(sample, where)
        y = self.target(sample, where)
        ids = self.encode(self.tokenizer, [text], self.max_length)[0]
        return torch.tensor(ids, dtype=torch.long), y

    def _text(self, sample: dict[str, bytes], where: str) -> str:
        try:
            return sample["txt"].decode("utf-8")
        except (KeyError, UnicodeDecodeError) as e:
            raise DataError(f"{where}: a text sample needs UTF-8 .txt and {self.target.what} "
                            f"({type(e).__name__}: {e})") from None

    def in_memory(self, samples: list[dict[str, bytes]], items: list[tuple[Tensor, Tensor]]) -> Any:
        """A few decoded examples (`ShardStream.in_memory`) as the in-memory loader holds them:
        ids, targets and their texts (the report titles its examples with them); None without a
        ``dataset`` to hold them."""
        if self.dataset is None:
            return None
        texts = [self._text(sample, "") for sample in samples]
        return self.dataset([ids.tolist() for ids, _ in items], torch.stack([y for _, y in items]), texts)


def load_text_shards(source: str | Path, *, encode: Callable, collate: Callable, dataset: Callable | None = None,
                     seed: int = 0, skip_bad: bool = False, shuffle_buffer: int = 1000, target: str = "class",
                     class_names: Sequence[str] | None = None, target_scaler: dict | None = None) -> TaskData:
    """The shards in a folder (written by `write_text_shards`), or those a pattern names
    (`attnlab.data.shard_patterns`), as a text-classification task; ``encode`` and
    ``collate(pad_id)`` are `attnlab.data.text`'s, as is ``dataset`` (`TextSampleDecoder`).
    ``target``: the run's ``--data.target``, which must be the one the shards were written with.
    ``class_names`` (a finished run's): the samples are relabelled by class (or label) name into
    the run's, as a text file is read for it (one the run lacks is refused by name).
    ``target_scaler`` (a finished regression run's) replaces the one written with the shards."""
    from attnlab.data.tokenizers import load_tokenizer

    folder, index = open_shards(source, "text-classification")
    target = check_target_of(source, index, target)
    info = {**index["info"], "target": target}
    tok = load_tokenizer(info["tokenizer"])
    if target == "regression":  # one output, whatever the run calls it
        names = [str(n) for n in index["class_names"]]
        decoder = TargetDecoder(target, names)
        info["target_scaler"] = scaler_of(source, index, target_scaler)
    else:
        positions = class_positions(source, index["class_names"], class_names, noun="class" if target == "class" else "label")
        names = [str(n) for n in (index["class_names"] if class_names is None else class_names)]
        decoder = TargetDecoder(target, names, positions)
    decode = TextSampleDecoder(tok, int(info["max_length"]), encode, dataset, decoder)

    def stream(split: str, shuffle: bool) -> ShardStream:
        shards = [(str(folder / e["file"]), e["count"]) for e in index["splits"].get(split, [])]
        return ShardStream(shards, decode, shuffle=shuffle, buffer=shuffle_buffer, seed=seed, skip_bad=skip_bad)

    task = TaskData(task="text-classification", train=stream("train", True), val=stream("val", False),
                    test=stream("test", False), num_classes=len(names), class_names=names,
                    input_shape=(int(info["max_length"]),), info={**info, "shards": str(source)}, target=target,
                    metric=TARGET_METRICS[target], collate_fn=collate(getattr(tok, "pad_id", PAD_ID)))
    task.files = {"tokenizer.json": tok.to_json()}
    return task
