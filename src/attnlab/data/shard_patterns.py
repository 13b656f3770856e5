"""Shard URL patterns, as WebDataset users write them, resolved against the folder's index.

``--data 'DIR/train-{000000..000009}.tar'`` (brace ranges, zero padding kept; comma lists
``{a,b}``) or a glob ``--data 'DIR/*.tar'`` names some of the shards ``attnlab shard`` wrote to
DIR. Braces are expanded by the ``braceexpand`` package, the expander ``webdataset`` itself uses,
so a pattern means here what it means there; each expanded part that holds ``*``, ``?`` or ``[``
is then globbed on disk.

What the task needs beyond the samples (classes, image spec or tokenizer, each shard's sample
count) is in ``shards.json`` beside the shards, so a pattern must name files of one folder that
holds that index. `open_shards` keeps, in each split, the listed shards the pattern names, in
their listed order; a split the pattern names no shard of is read whole, so a pattern over the
training shards (``train-*``) still validates and tests on the held-out splits. A pattern that
names nothing, or a file the index does not list, is one DataError naming the pattern: training
on shards whose counts nobody recorded would break the exact per-rank split
(`attnlab.data.shards`).
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any

from attnlab.data.shards import INDEX_NAME, is_shard_dir, read_index
from attnlab.errors import DataError

__all__ = ["is_shard_pattern", "is_shard_source", "expand_pattern", "open_shards"]

log = logging.getLogger(__name__)

_GLOB_CHARS = "*?["
_PATTERN_CHARS = "{" + _GLOB_CHARS


def is_shard_pattern(data: str | Path | None) -> bool:
    """``data`` is a pattern: no such path exists and its file name holds ``{``, ``*``, ``?`` or
    ``[`` (an existing path is always itself, whatever characters it holds)."""
    if data is None:
        return False
    text = str(data)
    return not Path(text).exists() and any(c in Path(text).name for c in _PATTERN_CHARS)


def is_shard_source(data: str | Path | None) -> bool:
    """``data`` is read as shards: a folder with a ``shards.json``, or a pattern naming shards."""
    return data is not None and (is_shard_dir(data) or is_shard_pattern(data))


def expand_pattern(pattern: str) -> list[Path]:
    """The files ``pattern`` names, in the order it names them, each once: its braces expanded,
    then each part that holds a glob character globbed (sorted); a part without one names its
    file whether or not it exists (`open_shards` checks it against the index)."""
    from braceexpand import UnbalancedBracesError, braceexpand

    try:
        parts = list(braceexpand(pattern))
    except UnbalancedBracesError as e:
        raise DataError(f"shard pattern {pattern!r}: {e}") from None
    files: dict[Path, None] = {}
    for part in parts:
        if any(c in part for c in _GLOB_CHARS):
            files.update((Path(p), None) for p in sorted(glob.glob(part)))
        else:
            files[Path(part)] = None
    return list(files)


def open_shards(data: str | Path, task: str) -> tuple[Path, dict[str, Any]]:
    """(folder, index) for ``--data``: a shard folder and its ``shards.json`` as they are, or a
    pattern's folder and the index cut to the shards it names (``index["pattern"]`` records it)."""
    if is_shard_dir(data):
        return Path(data), read_index(data, task)
    pattern = str(data)
    folder = Path(pattern).parent
    if any(c in str(folder) for c in _PATTERN_CHARS):
        raise DataError(f"shard pattern {pattern!r}: only the file name may be a pattern; the shards must sit in one "
                        f"folder beside its {INDEX_NAME}")
    if not is_shard_dir(folder):
        raise DataError(f"shard pattern {pattern!r}: no {INDEX_NAME} in {folder} (attnlab shard writes it beside the "
                        "shards)")
    index = read_index(folder, task)
    named = expand_pattern(pattern)
    if not named:
        raise DataError(f"shard pattern {pattern!r} matches no file in {folder}")
    listed = {e["file"] for entries in index.get("splits", {}).values() for e in entries}
    for path in named:
        if path.parent != folder or path.name not in listed:
            raise DataError(f"shard pattern {pattern!r} names {path}, which {folder / INDEX_NAME} does not list")
    names = {path.name for path in named}
    splits = {}
    for split, entries in index.get("splits", {}).items():
        chosen = [e for e in entries if e["file"] in names]
        splits[split] = chosen or entries  # a split the pattern does not name is read whole
        if entries and not chosen:
            log.info("shard pattern %s names no %s shard: reading all %d of them", pattern, split, len(entries))
    sizes = {split: sum(e["count"] for e in entries) for split, entries in splits.items()}
    return folder, {**index, "splits": splits, "sizes": sizes, "pattern": pattern}
