"""Plain text for language modelling (``--task language-model``): one text file (plain or ``.gz``,
read by `attnlab.data.text.read_lines`); the first 90% trains and the last 10% is the validation and
test split (nanoGPT's split of tinyshakespeare). Training draws windows at random offsets, evaluation
scores consecutive windows. Items are ``(x (T,), y (T,))``: token ids and the next token of each.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.data.base import TaskData, require_data
from attnlab.data.item_random import ItemDraws
from attnlab.data.text import read_lines, refuse_with_init
from attnlab.data.tokenizers import train_tokenizer
from attnlab.errors import ConfigError, DataError

__all__ = ["RandomWindowDataset", "WindowDataset", "load_language_model"]


class RandomWindowDataset(Dataset):
    """``samples`` windows at random offsets (nanoGPT's ``get_batch``): items ``(x (T,), y (T,))``.

    Item ``index``'s offset is drawn from the generator of (``seed``, epoch, ``index``)
    (`attnlab.data.item_random`), so every epoch (``set_epoch``) sees fresh windows, and a run
    draws the same ones with any number of DataLoader workers and when resumed mid-epoch.
    """

    def __init__(self, ids: Tensor, block_size: int, samples: int, *, seed: int = 0):
        if len(ids) <= block_size:
            raise DataError(f"the training text has {len(ids)} tokens, too few for windows of {block_size} + 1")
        self.ids, self.block_size, self.samples = ids, block_size, samples
        self.draws = ItemDraws(seed, samples)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose windows items draw (the trainer calls it before each epoch)."""
        self.draws.set_epoch(epoch)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = int(torch.randint(len(self.ids) - self.block_size, (), generator=self.draws.generator(index)))
        chunk = self.ids[start : start + self.block_size + 1]
        return chunk[:-1], chunk[1:]


class WindowDataset(Dataset):
    """Consecutive non-overlapping windows (evaluation): every token is scored once, with
    0..T-1 tokens of context, the same distribution as random windows give."""

    def __init__(self, ids: Tensor, block_size: int):
        self.ids, self.block_size = ids, block_size
        self.count = max(0, (len(ids) - 1) // block_size)
        if self.count == 0:
            raise DataError(f"the validation text has {len(ids)} tokens, too few for one window of {block_size} + 1")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        chunk = self.ids[index * self.block_size : (index + 1) * self.block_size + 1]
        return chunk[:-1], chunk[1:]


def load_language_model(
    data: str | None, *, seed: int, tokenizer: str | None = None, vocab_size: int | None = None,
    lowercase: bool | None = None, block_size: int | None = None, samples_per_epoch: int = 0, val_fraction: float = 0.1,
    pretrained_tokenizer=None, context_length: int | None = None,
) -> TaskData:
    """``pretrained_tokenizer`` (a run with ``--init``): the checkpoint's (or the source run's)
    tokenizer replaces the trained one. ``context_length``: the pretrained model's positions;
    ``block_size`` (the training window) defaults to it (else 64) and may not exceed it. A tokenizer
    option given beside ``pretrained_tokenizer`` is refused; without it, None means "char", 4000, False."""
    if pretrained_tokenizer is not None:
        refuse_with_init(tokenizer=tokenizer, vocab_size=vocab_size, lowercase=lowercase)
    tokenizer, vocab_size, lowercase = tokenizer or "char", 4000 if vocab_size is None else vocab_size, bool(lowercase)
    if context_length is not None and block_size is not None and not 1 <= block_size <= context_length:
        raise ConfigError(f"--data.block_size must be in [1, {context_length}] (the checkpoint's positions), got {block_size}")
    if block_size is not None and (not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1):
        raise ConfigError(f"--data.block_size must be an integer >= 1, got {block_size!r}")
    if not isinstance(samples_per_epoch, int) or samples_per_epoch < 0:
        raise ConfigError(f"--data.samples_per_epoch must be an integer >= 0 (0: one pass's worth), got {samples_per_epoch!r}")
    block_size = block_size or context_length or 64
    path = Path(require_data("language-model", data, "a text file"))
    if path.is_dir():
        raise DataError(f"{path} is a folder: the language-model task reads one text file")
    text = "\n".join(read_lines(path)) + "\n"
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(text) * (1 - val_fraction))
    train_text, val_text = text[:cut], text[cut:]
    if pretrained_tokenizer is not None:
        tok = pretrained_tokenizer
    elif tokenizer == "bpe":
        tok = train_tokenizer("bpe", train_text.splitlines(), vocab_size=vocab_size, lowercase=lowercase)
    else:
        tok = train_tokenizer(tokenizer, [train_text], lowercase=lowercase)
    train_ids = torch.tensor(tok.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.long)
    samples = samples_per_epoch or max(1, len(train_ids) // block_size)
    val = WindowDataset(val_ids, block_size)
    task = TaskData(task="language-model", train=RandomWindowDataset(train_ids, block_size, samples, seed=seed), val=val, test=val,
                    num_classes=0, class_names=[], input_shape=(block_size,), metric="loss",
                    info={"tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size, "block_size": block_size,
                          "train_tokens": len(train_ids), "val_tokens": len(val_ids), "file": str(path)})
    if context_length is not None:
        task.info["context_length"] = context_length
    task.files = {"tokenizer.json": tok.to_json()}
    task.tokenizer = tok
    return task
