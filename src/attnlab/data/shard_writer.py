"""``attnlab shard SRC OUT_DIR``: write any data attnlab can read as WebDataset shards.

One writer per data kind that has one (image folders and multi-label image CSVs:
`attnlab.data.image_shards`; text classification files, their classes, label sets or numbers:
`attnlab.data.text_shards`; audio folders: `attnlab.data.audio_shards`);
the output folder then trains with ``--data OUT_DIR`` exactly as the source did, read as a
stream (`attnlab.data.shards`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from attnlab.errors import ConfigError, DataError
from attnlab.output_paths import missing_folders, removed_after

__all__ = ["write_shards", "SHARD_TARGETS", "SHARD_WRITERS"]


def _images(src: str, out: Path, *, shard_size: int, seed: int, **options: Any) -> dict:
    from attnlab.data.image_shards import write_image_shards
    from attnlab.data.vision import load_image_folder_task

    task = load_image_folder_task(src, seed=seed, lazy=True, **options)
    return write_image_shards(task, out, shard_size=shard_size, seed=seed, source=src)


def _text(src: str, out: Path, *, shard_size: int, seed: int, **options: Any) -> dict:
    from attnlab.data.text import load_text_classification
    from attnlab.data.text_shards import write_text_shards

    options.pop("skip_bad", None)  # a malformed line is always named: a text file has no record to skip past
    task = load_text_classification(src, seed=seed, **options)
    return write_text_shards(task, out, shard_size=shard_size, seed=seed, source=src)


def _audio(src: str, out: Path, *, shard_size: int, seed: int, **options: Any) -> dict:
    from attnlab.data.audio import load_audio_task
    from attnlab.data.audio_shards import write_audio_shards

    task = load_audio_task(src, seed=seed, lazy=True, **options)
    return write_audio_shards(task, out, shard_size=shard_size, seed=seed, source=src)


SHARD_WRITERS: dict[str, Callable[..., dict]] = {"images": _images, "text-classification": _text, "audio": _audio}
# the targets each writer's samples can hold (`attnlab.data.shard_targets`)
SHARD_TARGETS: dict[str, tuple[str, ...]] = {"images": ("class", "multilabel"), "text-classification": ("class", "multilabel", "regression"),
                                             "audio": ("class",)}


def write_shards(src: str | Path, out_dir: str | Path, *, task: str = "images", shard_size: int = 1000, seed: int = 0,
                 options: dict[str, Any] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Shard ``src`` (as ``--task`` reads it; ``options`` are its ``--data.*`` options) into
    ``out_dir``, which must be new or empty. Returns the index (``shards.json``)."""
    if task not in SHARD_WRITERS:
        raise ConfigError(f"attnlab shard has no writer for task {task!r}; it shards {sorted(SHARD_WRITERS)}")
    if not Path(src).exists():
        raise DataError(f"data path not found: {src}")
    target = (options or {}).get("target", "class")
    if target not in SHARD_TARGETS[task]:  # before any file is read or folder made
        raise ConfigError(f"attnlab shard --task {task} writes --data.target {' or '.join(SHARD_TARGETS[task])}, "
                          f"not {target}")
    out = Path(out_dir)
    missing, parent = missing_folders(out)
    if not parent.is_dir():
        where = f"{out} is a file" if parent == out else f"{out}: {parent} is a file"
        raise ConfigError(f"{where}, not a folder; name a new or empty folder for the shards")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; pass --overwrite or name a new folder")
    with removed_after(missing):  # the folders made for a refused source are removed again (a written one is kept)
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old in list(out.glob("*.tar")) + [out / "shards.json"]:
                old.unlink(missing_ok=True)
        return SHARD_WRITERS[task](str(src), out, shard_size=shard_size, seed=seed, **(options or {}))
