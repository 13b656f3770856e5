"""Sequential recommendation data, as in SASRec (Kang & McAuley 2018, "Self-Attentive Sequential
Recommendation", ICDM).

The file holds one action per line, ``user item`` (whitespace separated), each user's lines in
time order (users may interleave). Ids are any strings; they are remapped to internal ids in
natural order (numerically when every id is an integer, else lexicographically), so the mapping
depends only on the set of ids, never on line order: items become 1..num_items (0 is padding),
users 0..num_users-1.

Split (leave-one-out, the paper's protocol and its code's ``data_partition``): a user with at
least 3 actions gives the last action to test, the second last to validation and the rest to
training; a user with fewer actions is kept for training only. Training uses, per user, the
most recent ``max_len`` transitions of the training part (input item -> next item) with one
negative per position among items the user never trained on, drawn afresh each epoch from a
generator seeded by (seed, epoch, user's row) (`attnlab.data.item_random`): the same with any
number of DataLoader workers, at any world size, and in a run resumed mid-epoch. Evaluation ranks the
held-out item against ``num_negatives`` (100) distinct items the user never interacted with,
drawn once per split from ``numpy.random.default_rng((seed, split))``.

Sequences are left-padded with 0 to ``max_len``, so the last position is always the most recent
item (the model reads its next-item prediction there).

A run keeps its item-id map in data.json (``info.item_ids``: the file's ids in internal order,
space-separated, since an id never holds white space). A finished run's data (evaluate another
file, ``--resume``) is read with that map (``items``), not one rebuilt from the file: the model's
embedding rows stay the items they were trained for, an item the run never saw is a DataError
naming the file and line, and items of the map absent from the file are fine.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnlab.config import check_choice
from attnlab.data.base import TaskData
from attnlab.data.file_checks import not_utf8
from attnlab.data.item_random import ItemDraws
from attnlab.errors import ConfigError, DataError

__all__ = [
    "Interactions",
    "LeaveOneOut",
    "SasrecTrainDataset",
    "SasrecEvalDataset",
    "read_interactions",
    "leave_one_out",
    "pad_left",
    "sample_negatives",
    "file_sha256",
    "load_sasrec_task",
]

PAD = 0


@dataclass
class Interactions:
    """Every user's item sequence, in internal ids.

    ``items[i]`` is the original id of internal item i (``items[0]`` is the padding "<pad>");
    ``users[u]`` the original id of user u; ``sequences[u]`` user u's items in time order.
    """

    users: list[str]
    items: list[str]
    sequences: list[np.ndarray]
    path: str = ""
    user_index: dict[str, int] = field(init=False, repr=False)
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.users)}
        self.item_index = {it: i for i, it in enumerate(self.items) if i != PAD}

    @property
    def num_items(self) -> int:
        return len(self.items) - 1

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_actions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


_INTEGER = re.compile(r"-?[0-9]+")  # ASCII only: str.isdigit takes "²", which int() refuses


def _natural_order(ids: set[str]) -> list[str]:
    """Numeric order when every id is an integer written in ASCII digits, else text order; ids
    of one value ("01", "1") follow their spelling, so the map never depends on set order."""
    if all(_INTEGER.fullmatch(i) for i in ids):
        return sorted(ids, key=lambda i: (int(i), i))
    return sorted(ids)


def read_interactions(path: str | Path, items: Sequence[str] | None = None, repeats: str = "refuse") -> Interactions:
    """Read a ``user item`` file. Bad lines raise DataError naming the file and line number.

    ``items``: a run's item ids in internal order (1..len); the file is read with that map
    instead of its own, and an item not in it is a DataError naming the line and the map's size.
    ``repeats``: a user's item on the line right after the same item of that user (a duplicated
    line; SASRec's data sets have none) is refused ("refuse"), since leave-one-out would then hold
    out an item that is also the last input, and score it as a perfect hit; "keep" reads them."""
    check_choice("sasrec", "repeats", repeats, ("refuse", "keep"))
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sequential-recommendation data file not found: {path}")
    per_user: dict[str, list[str]] = {}
    last_line: dict[str, int] = {}
    known = None if items is None else set(items)
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first user id
            for number, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue  # blank lines (a trailing newline, say) carry nothing
                if len(fields) != 2:
                    raise DataError(f"{path}:{number}: expected 'user item' (2 fields), got {len(fields)}: {line.strip()[:80]!r}")
                user, item = fields
                if known is not None and item not in known:
                    raise DataError(f"{path}:{number}: item {item!r} is not in the run's item map ({len(known)} items "
                                    "it was trained on); a model has no embedding for an item it never saw")
                seq = per_user.setdefault(user, [])
                if repeats == "refuse" and seq and seq[-1] == item:
                    raise DataError(f"{path}:{number}: user {user!r} has item {item!r} again right after line "
                                    f"{last_line[user]} (a duplicated line?); a held-out item that is also the last input "
                                    "scores as a perfect hit. Remove the repeats, or pass --data.repeats keep")
                seq.append(item)
                last_line[user] = number
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    if not per_user:
        raise DataError(f"{path}: no 'user item' lines found")
    if items is None:
        items = _natural_order({it for seq in per_user.values() for it in seq})
    items = ["<pad>"] + list(items)
    item_index = {it: i for i, it in enumerate(items) if i != PAD}
    users = _natural_order(set(per_user))
    sequences = [np.fromiter((item_index[it] for it in per_user[u]), dtype=np.int64, count=len(per_user[u])) for u in users]
    return Interactions(users=users, items=items, sequences=sequences, path=str(path))


@dataclass
class LeaveOneOut:
    """Per user: training items, and the validation / test item (0 where the user has < 3 actions)."""

    train: list[np.ndarray]
    valid: np.ndarray  # (U,)
    test: np.ndarray  # (U,)

    @property
    def eval_users(self) -> np.ndarray:
        """Users with a validation and a test item, ascending."""
        return np.flatnonzero(self.test != PAD)


def leave_one_out(sequences: list[np.ndarray]) -> LeaveOneOut:
    """Last item -> test, second last -> validation, rest -> train; users with < 3 actions train only."""
    train, valid, test = [], np.zeros(len(sequences), np.int64), np.zeros(len(sequences), np.int64)
    for u, seq in enumerate(sequences):
        if len(seq) < 3:
            train.append(seq)
        else:
            train.append(seq[:-2])
            valid[u], test[u] = seq[-2], seq[-1]
    return LeaveOneOut(train=train, valid=valid, test=test)


def pad_left(seq: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` items of ``seq``, left-padded with 0. Shape: (length,)."""
    out = np.zeros(length, np.int64)
    tail = seq[-length:] if length else seq[:0]
    if len(tail):
        out[length - len(tail):] = tail
    return out


def sample_negatives(rng: np.random.Generator, num_items: int, exclude: np.ndarray, count: int) -> np.ndarray:
    """``count`` distinct items from 1..num_items, none in ``exclude``, uniformly. Shape: (count,)."""
    exclude = np.unique(exclude)
    exclude = exclude[(exclude >= 1) & (exclude <= num_items)]
    available = num_items - len(exclude)
    if available < count:
        raise DataError(
            f"cannot draw {count} negative items for a user who interacted with {len(exclude)} of {num_items} items; "
            f"lower --data.num_negatives"
        )
    if available < 4 * count:  # rejection would loop long: draw from the complement directly
        pool = np.setdiff1d(np.arange(1, num_items + 1), exclude)
        return rng.choice(pool, size=count, replace=False)
    out = np.zeros(0, np.int64)
    while len(out) < count:
        draw = rng.integers(1, num_items + 1, size=2 * count + 8)
        out = np.concatenate([out, draw[~np.isin(draw, exclude)]])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]  # distinct, in draw order
    return out[:count]


class SasrecTrainDataset(Dataset):
    """One example per user with >= 2 training items: (input, positive, negative) sequences.

    ``input[t]`` is followed by ``positive[t]``; ``negative[t]`` is a random item the user
    never trained on, drawn from the generator of (``seed``, epoch, ``index``): redrawn each
    epoch (``set_epoch``), the same at every fetch within one. Positions where ``positive``
    is 0 are padding and carry no loss.

    Shape: each item three (L,) int64 tensors.
    """

    def __init__(self, train: list[np.ndarray], num_items: int, max_len: int, *, users: np.ndarray | None = None,
                 user_ids: Sequence[str] | None = None, path: str = "", seed: int = 0):
        users = np.arange(len(train)) if users is None else users
        self.users = np.array([u for u in users if len(train[u]) >= 2], dtype=np.int64)
        self.num_items = num_items
        self.inputs = torch.from_numpy(np.stack([pad_left(train[u][:-1], max_len) for u in self.users])
                                       if len(self.users) else np.zeros((0, max_len), np.int64))
        self.positives = torch.from_numpy(np.stack([pad_left(train[u][1:], max_len) for u in self.users])
                                          if len(self.users) else np.zeros((0, max_len), np.int64))
        self.seen = [torch.from_numpy(np.unique(train[u])) for u in self.users]
        full = [int(u) for u, s in zip(self.users, self.seen) if len(s) >= num_items]
        if full:  # named as the file spells the user (``user_ids``: internal id -> file id), else by index
            who = f"user {user_ids[full[0]]!r}" if user_ids is not None else f"user index {full[0]}"
            raise DataError(f"{path + ': ' if path else ''}{who} trained on every one of the {num_items} items: no negative exists")
        self.draws = ItemDraws(seed, len(self.users))

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose negatives items draw (the trainer calls it before each epoch)."""
        self.draws.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        positives = self.positives[index]
        g = self.draws.generator(index)
        negatives = torch.randint(1, self.num_items + 1, positives.shape, generator=g)
        clash = torch.isin(negatives, self.seen[index])
        while bool(clash.any()):  # rejection: few retries, since a user sees few of the items
            negatives[clash] = torch.randint(1, self.num_items + 1, (int(clash.sum()),), generator=g)
            clash = torch.isin(negatives, self.seen[index])
        negatives = negatives.masked_fill(positives == PAD, PAD)
        return self.inputs[index], positives, negatives


class SasrecEvalDataset(Dataset):
    """(history, candidates) per evaluated user; ``candidates[0]`` is the held-out item.

    ``users`` holds internal user ids; ``user_ids`` / ``item_ids`` (shared lists) map internal
    ids back to the file's ids, for reports.

    Shape: history (L,) int64, candidates (1 + num_negatives,) int64.
    """

    def __init__(self, history: Tensor, candidates: Tensor, users: Tensor, *, user_ids: list[str], item_ids: list[str]):
        if not (len(history) == len(candidates) == len(users)):
            raise DataError(f"eval split: {len(history)} histories, {len(candidates)} candidate rows, {len(users)} users")
        self.history, self.candidates, self.users = history, candidates, users
        self.user_ids, self.item_ids = user_ids, item_ids

    def __len__(self) -> int:
        return len(self.history)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.history[index], self.candidates[index]


def _eval_split(inter: Interactions, split: LeaveOneOut, which: str, *, max_len: int, num_negatives: int,
                seed: int) -> SasrecEvalDataset:
    users = split.eval_users
    rng = np.random.default_rng((seed, 1 if which == "valid" else 2))
    history = np.zeros((len(users), max_len), np.int64)
    candidates = np.zeros((len(users), 1 + num_negatives), np.int64)
    for row, u in enumerate(users):
        past = split.train[u] if which == "valid" else inter.sequences[u][:-1]
        history[row] = pad_left(past, max_len)
        candidates[row, 0] = split.valid[u] if which == "valid" else split.test[u]
        try:
            candidates[row, 1:] = sample_negatives(rng, inter.num_items, inter.sequences[u], num_negatives)
        except DataError as exc:
            raise DataError(f"{inter.path}: user {inter.users[u]!r}: {exc}") from None
    return SasrecEvalDataset(torch.from_numpy(history), torch.from_numpy(candidates), torch.from_numpy(users),
                             user_ids=inter.users, item_ids=inter.items)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sasrec_task(path: str | Path, *, seed: int = 0, max_len: int = 50, num_negatives: int = 100,
                     repeats: str = "refuse", items: Sequence[str] | None = None) -> TaskData:
    """Leave-one-out splits of a ``user item`` file (see the module docstring).

    ``info`` (saved in the run's data.json) keeps the absolute data path, its SHA-256 and the
    item-id map (``item_ids``); ``recommend`` re-reads the file for the users' histories and
    refuses a file that changed since training. ``items``: a finished run's item map to read
    the file with (see the module docstring). ``repeats``: see `read_interactions`.
    """
    path = Path(path)
    if not isinstance(max_len, int) or max_len < 1:
        raise ConfigError(f"sasrec: max_len must be an integer >= 1, got {max_len!r}")
    if not isinstance(num_negatives, int) or num_negatives < 1:
        raise ConfigError(f"sasrec: num_negatives must be an integer >= 1, got {num_negatives!r}")
    inter = read_interactions(path, items, repeats)
    split = leave_one_out(inter.sequences)
    train = SasrecTrainDataset(split.train, inter.num_items, max_len, user_ids=inter.users, path=str(path), seed=seed)
    if len(train) == 0:
        raise DataError(f"{path}: no user has 2 or more training actions, so there is nothing to learn from")
    if len(split.eval_users) == 0:
        raise DataError(f"{path}: no user has 3 or more actions, so there is nothing to validate or test on")
    val = _eval_split(inter, split, "valid", max_len=max_len, num_negatives=num_negatives, seed=seed)
    test = _eval_split(inter, split, "test", max_len=max_len, num_negatives=num_negatives, seed=seed)
    info = {
        "data_path": str(path.resolve()), "data_sha256": file_sha256(path), "num_users": inter.num_users,
        "num_items": inter.num_items, "num_actions": inter.num_actions, "max_len": max_len,
        "num_negatives": num_negatives, "repeats": repeats, "train_users": len(train), "eval_users": int(len(split.eval_users)),
        "item_ids": " ".join(inter.items[1:]),  # one line of JSON however many items (ids hold no white space)
    }
    return TaskData(task="sasrec", train=train, val=val, test=test, num_classes=0, class_names=[],
                    input_shape=(max_len,), metric="ndcg@10", info=info)
