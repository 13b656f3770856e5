"""Parallel text for translation: aligned source/target files -> tokenized sentence pairs.

Format a user brings (``--data PATH``): a folder of aligned files ``<split>.<lang>`` (plain or
``.gz``; split names start with ``train``, ``val``/``valid``/``dev``, ``test``), languages
from ``src_lang``/``tgt_lang`` or found when the folder holds exactly two; or ``--data
SOURCE_FILE --data.target_file TARGET_FILE`` (one pair, split by fractions). Misaligned files
or empty lines raise ``DataError`` naming the file (and line). The tokenizer(s) are trained
on the training split only (`attnlab.data.tokenizers`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.data.base import TaskData, require_data
from attnlab.data.splits import check_fractions
from attnlab.data.text import pad_batch, read_lines, refuse_with_init
from attnlab.data.tokenizers import BOS_ID, EOS_ID, train_tokenizer
from attnlab.errors import ConfigError, DataError

__all__ = ["find_parallel_files", "read_parallel", "ParallelDataset", "translation_collate", "load_translation"]

_SPLIT_PREFIXES = {"train": ("train",), "val": ("val", "valid", "dev"), "test": ("test",)}


def _lang_of(p: Path) -> tuple[str, str]:
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    stem, _, lang = name.rpartition(".")
    return stem, lang


def find_parallel_files(folder: Path, src_lang: str | None, tgt_lang: str | None) -> dict[str, tuple[Path, Path]]:
    """{split: (source file, target file)} of a folder of ``<split>.<lang>[.gz]`` files."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and "." in p.name and not p.name.startswith(".")]
    langs = sorted({_lang_of(p)[1] for p in files} - {"md", "txt", "json"})
    if src_lang is None or tgt_lang is None:
        if len(langs) != 2:
            raise DataError(f"{folder}: cannot tell the languages (suffixes {langs}); set --data.src_lang and --data.tgt_lang")
        given = src_lang or tgt_lang
        if given is None and "en" not in langs:
            raise DataError(f"{folder}: which of {langs} is the source? set --data.src_lang and --data.tgt_lang")
        if given is not None and given not in langs:
            raise DataError(f"{folder}: no files in language {given!r} (found {langs})")
        if src_lang is None and tgt_lang is None:
            src_lang = "en"  # the usual direction: from English
        if src_lang is None:
            src_lang = next(l for l in langs if l != tgt_lang)
        else:
            tgt_lang = next(l for l in langs if l != src_lang)
    found: dict[str, tuple[Path, Path]] = {}
    for split, prefixes in _SPLIT_PREFIXES.items():
        stems = sorted({_lang_of(p)[0] for p in files if _lang_of(p)[0].lower().startswith(prefixes)})
        for stem in stems:
            pair = [next((p for p in files if _lang_of(p) == (stem, lang)), None) for lang in (src_lang, tgt_lang)]
            if pair[0] is not None and pair[1] is not None:
                found[split] = (pair[0], pair[1])
                break  # the first in name order (e.g. test_2016_flickr before test_2017)
    if "train" not in found:
        raise DataError(f"{folder}: no train.{src_lang} / train.{tgt_lang} pair (plain or .gz)")
    return found


def read_parallel(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    """Aligned sentence pairs; both files must have the same number of lines, none empty."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: parallel files must be aligned line by line")
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{path}:{number}: empty sentence (parallel files need text on every line)")
    return [s.strip() for s in src], [t.strip() for t in tgt]


class ParallelDataset(Dataset):
    """Items ``(source ids + <eos>, <bos> + target ids + <eos>, target text)``."""

    def __init__(self, src_ids: list[list[int]], tgt_ids: list[list[int]], src_texts: list[str], tgt_texts: list[str], max_length: int):
        self.src = [torch.tensor(s[: max_length - 1] + [EOS_ID]) for s in src_ids]
        self.tgt = [torch.tensor([BOS_ID] + t[: max_length - 2] + [EOS_ID]) for t in tgt_ids]
        self.src_texts, self.tgt_texts = src_texts, tgt_texts

    def __len__(self) -> int:
        return len(self.src)

    @property
    def lengths(self) -> list[int]:
        """Source + target tokens per pair (``TrainConfig.group_by_length``)."""
        return [len(s) + len(t) for s, t in zip(self.src, self.tgt)]

    def __getitem__(self, index: int):
        return self.src[index], self.tgt[index], self.tgt_texts[index]


def translation_collate(batch) -> tuple[Tensor, Tensor, list[str]]:
    """-> (source (B, M), target (B, N), reference texts); a list passes ``to_device`` untouched."""
    return pad_batch([b[0] for b in batch]), pad_batch([b[1] for b in batch]), [b[2] for b in batch]


def load_translation(
    data: str | None, *, seed: int, target_file: str | None = None, src_lang: str | None = None, tgt_lang: str | None = None,
    tokenizer: str | None = None, vocab_size: int | None = None, shared_vocab: bool | None = None,
    lowercase: bool | None = None, max_length: int = 128, val_fraction: float = 0.05, test_fraction: float = 0.05,
    pretrained_tokenizer=None, pretrained_target_tokenizer=None,
) -> TaskData:
    """Tokenizer options left None mean "bpe", 8000 tokens, one vocabulary shared by both
    languages, not lower-cased. ``pretrained_tokenizer`` (``--init RUN``, or a finished run read
    again: evaluate, ``--resume``): the run's tokenizer replaces the trained one, for both
    languages, or for the source only when ``pretrained_target_tokenizer`` gives the target's
    (a run with ``--data.shared_vocab false``); a tokenizer option given beside it is refused."""
    if pretrained_tokenizer is not None:
        refuse_with_init(tokenizer=tokenizer, vocab_size=vocab_size, shared_vocab=shared_vocab, lowercase=lowercase)
    elif pretrained_target_tokenizer is not None:
        raise ConfigError("a target tokenizer was given without the source's (pretrained_tokenizer)")
    path = Path(require_data("translation", data, "a folder of <split>.<lang>[.gz] files, or a source file with --data.target_file"))
    if path.is_dir():
        files = find_parallel_files(path, src_lang, tgt_lang)
        parts = {split: read_parallel(*pair) for split, pair in files.items()}
    else:
        if target_file is None:
            raise DataError(f"{path} is a file: give the aligned target file with --data.target_file PATH")
        files = {"train": (path, Path(target_file))}
        parts = {"train": read_parallel(path, Path(target_file))}
    missing = [s for s in ("val", "test") if s not in parts]
    if missing:
        fractions = {"val": val_fraction if "val" in missing else 0.0, "test": test_fraction if "test" in missing else 0.0}
        check_fractions(fractions["val"], fractions["test"])
        src, tgt = parts["train"]
        order = np.random.default_rng(seed).permutation(len(src))
        n_test, n_val = round(len(src) * fractions["test"]), round(len(src) * fractions["val"])
        cuts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": np.sort(order[n_test + n_val :])}
        for split in ("test", "val", "train"):
            if split in missing or split == "train":
                parts[split] = ([src[i] for i in cuts[split]], [tgt[i] for i in cuts[split]])
        if not parts["val"][0] or not parts["test"][0]:
            raise DataError(f"{path}: too few sentence pairs ({len(src)}) to cut validation and test splits")
    train_src, train_tgt = parts["train"]
    tokenizer, vocab_size, lowercase = tokenizer or "bpe", 8000 if vocab_size is None else vocab_size, bool(lowercase)
    if pretrained_tokenizer is not None:
        src_tok, shared_vocab = pretrained_tokenizer, pretrained_target_tokenizer is None
        tgt_tok = src_tok if shared_vocab else pretrained_target_tokenizer
    elif shared_vocab is None or shared_vocab:
        shared_vocab = True
        src_tok = tgt_tok = train_tokenizer(tokenizer, train_src + train_tgt, vocab_size=vocab_size, lowercase=lowercase)
    else:
        src_tok = train_tokenizer(tokenizer, train_src, vocab_size=vocab_size, lowercase=lowercase)
        tgt_tok = train_tokenizer(tokenizer, train_tgt, vocab_size=vocab_size, lowercase=lowercase)
    sets = {split: ParallelDataset(src_tok.encode_batch(s), tgt_tok.encode_batch(t), s, t, max_length)
            for split, (s, t) in parts.items()}
    info = {"src_tokenizer": src_tok.to_dict(), "tgt_tokenizer": None if shared_vocab else tgt_tok.to_dict(),
            "shared_vocab": shared_vocab, "src_vocab_size": src_tok.vocab_size, "tgt_vocab_size": tgt_tok.vocab_size,
            "max_length": max_length,
            "files": {k: [str(p) for p in v] for k, v in files.items()}}
    task = TaskData(task="translation", train=sets["train"], val=sets["val"], test=sets["test"], num_classes=0,
                    class_names=[], input_shape=(max_length,), metric="bleu", collate_fn=translation_collate, info=info)
    task.files = {"tokenizer.json": src_tok.to_json()} if shared_vocab else {
        "tokenizer_src.json": src_tok.to_json(), "tokenizer_tgt.json": tgt_tok.to_json()}
    task.src_tokenizer, task.tgt_tokenizer = src_tok, tgt_tok
    return task
