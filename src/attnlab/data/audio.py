"""Audio classification data: a folder of WAV files -> log-mel inputs, in memory, decoded on
access, or streamed from shards.

The pipeline from file to features (read, mono, resample, fix length, log-mel, normalise) is
`attnlab.data.audio_features`, re-exported here; `load_audio_task` applies it to a source:
the Free Spoken Digit Dataset naming ``{digit}_{speaker}_{index}.wav`` in one folder (official
split: index 0-4 test, the rest train/val), or ``root/<class>/*.wav`` split per class by
``seed``, or a folder of shards written by ``attnlab shard --task audio``
(`attnlab.data.audio_shards`). ``lazy`` keeps paths only (`attnlab.data.lazy_audio`).

`SpecAugment` (Park et al. 2019, frequency and time masking) is the training-time
``TaskData.batch_augment``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from attnlab.config import check_choice
from attnlab.data.audio_features import (
    AudioSpec,
    clip_features,
    hz_to_mel,
    load_clip,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    prepare_audio,
)
from attnlab.data.base import (
    TaskData,
    TensorPairDataset,
)
from attnlab.data.lazy_audio import AudioFileDataset, scan_audio
from attnlab.data.shard_patterns import is_shard_source
from attnlab.data.shards import class_positions
from attnlab.data.splits import check_fractions, per_class_split
from attnlab.data.wav import fix_length, read_wav, resample
from attnlab.errors import ConfigError, DataError

__all__ = [
    "AudioSpec", "AudioFiles", "SpecAugment", "FSDD_NAME", "list_audio_files", "read_wav", "resample", "fix_length", "load_clip",
    "mel_filterbank", "hz_to_mel", "mel_to_hz", "log_mel", "clip_features", "prepare_audio", "load_audio_task",
]

logger = logging.getLogger(__name__)

FSDD_NAME = re.compile(r"^(\d+)_([A-Za-z0-9-]+)_(\d+)\.wav$", re.IGNORECASE)
# Past this many bytes of float32 features an audio folder is decoded on access (lazy=None).
LAZY_BYTES = 1 << 30


class SpecAugment:
    """Frequency and time masking (Park et al. 2019, SpecAugment), vectorised over the batch.

    Each of ``freq_masks`` (``time_masks``) masks sets a band of width uniform in
    [0, ``freq_width``] ([0, ``time_width``]) at a uniform position to ``value`` (0: the
    mean of normalised features). Draws come from torch's global RNG or ``generator``.

    Shape: x (B, C, F, T) or (C, F, T) -> same.
    """

    def __init__(self, *, freq_masks: int = 2, freq_width: int = 4, time_masks: int = 2, time_width: int = 8, value: float = 0.0):
        if min(freq_masks, freq_width, time_masks, time_width) < 0:
            raise ConfigError("SpecAugment: mask counts and widths must be >= 0")
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.value = float(value)

    def __repr__(self) -> str:
        return (f"SpecAugment(freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
                f"time_masks={self.time_masks}, time_width={self.time_width})")

    def _mask(self, batch: int, size: int, count: int, width: int, device, generator) -> Tensor:
        """(B, size) bool, True where any of ``count`` random bands covers the position."""
        if count == 0 or width == 0:
            return torch.zeros(batch, size, dtype=torch.bool, device=device)
        dev = generator.device if generator is not None else torch.device("cpu")  # a GPU generator draws there
        widths = torch.randint(0, min(width, size) + 1, (batch, count), generator=generator, device=dev)
        starts = (torch.rand(batch, count, generator=generator, device=dev) * (size - widths + 1)).long()  # (B, count)
        pos = torch.arange(size, device=dev)[None, None, :]  # (1, 1, size)
        hit = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])  # (B, count, size)
        return hit.any(dim=1).to(device)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        B, C, F, T = x.shape
        freq = self._mask(B, F, self.freq_masks, self.freq_width, x.device, generator)  # (B, F)
        time = self._mask(B, T, self.time_masks, self.time_width, x.device, generator)  # (B, T)
        masked = freq[:, None, :, None] | time[:, None, None, :]  # (B, 1, F, T)
        out = x.masked_fill(masked, self.value)
        return out[0] if single else out


# --- sources and the loader ----------------------------------------------------------------------


def _visible_wavs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav" and not p.name.startswith("."))


class AudioFiles(NamedTuple):
    """A source's files (sorted), their labels, class names, and the split as file indices."""

    files: list[Path]
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    splits: tuple[np.ndarray, np.ndarray, np.ndarray]  # train, val, test; sorted int64 indices
    layout: str  # "fsdd" | "folders"


def list_audio_files(
    root: str | Path, *, layout: str = "auto", seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
    min_classes: int = 2, finished: bool = False,
) -> AudioFiles:
    """Find and label the .wav files of ``root`` and split them (see `load_audio_task` for layouts).

    FSDD: recordings with index 0-4 are the test split (the dataset's official split),
    ``test_fraction`` is unused, and ``val_fraction`` of the rest of each class is validation.
    A root holding both loose .wav files and class folders of them is refused under "auto"
    (which files are meant is a guess either way), as is an empty class folder and a label
    whose every file lands in the test split (a class scored but never trained on). Fewer than
    ``min_classes`` class folders are refused (1: data scored by a run that knows its classes).
    ``finished``: the files are scored by a finished run (evaluate, ``--resume``), so FSDD test
    recordings alone (index 0-4, a held-out folder) are read: the run's training is what counts.
    """
    check_choice("audio", "layout", layout, ("auto", "fsdd", "folders"))
    check_fractions(val_fraction, test_fraction)
    root = Path(root)
    if not root.exists():
        raise DataError(f"audio folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is a file; expected a folder of .wav files (FSDD naming) or of class folders")
    loose = _visible_wavs(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if layout == "auto":
        with_wavs = [d for d in class_dirs if _visible_wavs(d)]
        if loose and with_wavs:
            raise DataError(f"{root} mixes the two audio layouts: loose .wav files (e.g. {loose[0].name}) and class folders "
                            f"of them (e.g. {with_wavs[0].name}/); keep one, or pick it with --data.layout fsdd|folders")
        layout = "folders" if class_dirs and not loose else "fsdd"
    if layout == "fsdd":
        if not loose:
            raise DataError(f"no .wav files in {root}: expected FSDD files {{digit}}_{{speaker}}_{{index}}.wav or root/<class>/*.wav")
        parsed = [FSDD_NAME.match(p.name) for p in loose]
        bad = [p.name for p, m in zip(loose, parsed) if m is None]
        if bad:
            raise DataError(f"{root}: {len(bad)} file(s) do not follow the FSDD naming {{digit}}_{{speaker}}_{{index}}.wav, e.g. {bad[0]}")
        digits = np.array([int(m.group(1)) for m in parsed])
        index = np.array([int(m.group(3)) for m in parsed])
        class_ids = sorted(set(digits.tolist()))
        labels = np.searchsorted(class_ids, digits)
        test = np.flatnonzero(index <= 4)  # the dataset's official split: recordings 0-4 of each speaker/digit
        pool = np.flatnonzero(index > 4)
        if not len(test) or not (len(pool) or finished):
            raise DataError(f"{root}: the FSDD split needs recordings with index 0-4 (test) and 5+ (train); "
                            f"found {len(test)} and {len(pool)}")
        names = [str(c) for c in class_ids]
        if not finished:
            _check_trained(loose, labels, names, (pool, np.zeros(0, np.int64), test),
                          why="FSDD files with index 0-4 are the test split; add recordings of it with index 5 or more")
        tr, va, _ = per_class_split(labels[pool], seed=seed, val_fraction=val_fraction, test_fraction=0.0)
        return AudioFiles(loose, labels.astype(np.int64), names, (pool[tr], pool[va], test), layout)
    if not class_dirs:
        raise DataError(f"no class folders with .wav files in {root} (root/<class>/*.wav)")
    files, labels = [], []
    for label, d in enumerate(class_dirs):
        found = _visible_wavs(d)
        if not found:
            raise DataError(f"class folder {d} holds no .wav files")
        files += found
        labels += [label] * len(found)
    if len(class_dirs) < min_classes:
        raise DataError(f"{root} has only one class folder ({class_dirs[0].name}); classification needs two")
    labels = np.array(labels, dtype=np.int64)
    splits = per_class_split(labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return AudioFiles(files, labels, [d.name for d in class_dirs], splits, layout)


def _check_trained(files: Sequence[Path], labels: np.ndarray, class_names: Sequence[str],
                  parts: Sequence[np.ndarray], *, why: str) -> None:
    """Refuse a label of the val or test split (``parts``: train, val, test file positions) that
    no training file has, naming the label and one of its files: the model would be scored on
    a class it never saw. ``why`` says how the files came to be split so."""
    trained = set(labels[parts[0]].tolist())
    for split, part in (("validation", parts[1]), ("test", parts[2])):
        unseen = [i for i in part.tolist() if labels[i] not in trained]
        if unseen:
            i = unseen[0]
            raise DataError(f"{split} label {class_names[labels[i]]!r} never seen in training (no training file has it, "
                            f"e.g. {files[i]}): {why}")


def _check_shards_fit(root: str | Path, task: TaskData, audio_spec: Mapping[str, Any] | None) -> None:
    """Shards hold the features they were written with: a finished run reads them only when those
    are its own, else the model would get other inputs (their classes are relabelled by name on load)."""
    if audio_spec is not None:
        theirs, ours = task.info["audio"], AudioSpec.from_dict(audio_spec).to_dict()
        differ = [k for k in ours if theirs.get(k) != ours[k]]
        if differ:
            shown = ", ".join(f"{k} {theirs.get(k)!r} (the run: {ours[k]!r})" for k in differ)
            raise DataError(f"{root}: the shards' audio features differ from the run's: {shown}")


def load_audio_task(
    root: str | Path,
    *,
    seed: int = 0,
    layout: str = "auto",
    sample_rate: int = 8000,
    duration: float = 1.024,
    n_fft: int = 256,
    hop_length: int = 128,
    n_mels: int = 32,
    f_min: float = 0.0,
    f_max: float | None = None,
    top_db: float = 80.0,
    normalize: str = "utterance",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    augment: bool = True,
    freq_masks: int = 2,
    freq_width: int = 4,
    time_masks: int = 2,
    time_width: int = 8,
    max_train_per_class: int = 0,
    lazy: bool | None = None,
    skip_bad: bool = False,
    class_names: Sequence[str] | None = None,
    audio_spec: Mapping[str, Any] | None = None,
) -> TaskData:
    """WAV files -> log-mel inputs (1, n_mels, frames) with labels.

    ``layout``: "fsdd" (``{digit}_{speaker}_{index}.wav`` in ``root``; index 0-4 is the
    test split, ``val_fraction`` of the rest per class is validation), "folders"
    (``root/<class>/*.wav``, split per class by ``seed``) or "auto" (folders if ``root`` holds
    class folders and no loose .wav files; both at once is refused, naming one of each).
    ``max_train_per_class`` > 0 keeps only that many
    training clips per class (quick runs). ``augment`` adds `SpecAugment` masking.

    ``root`` may instead be a folder of shards written by ``attnlab shard --task audio``
    (`attnlab.data.audio_shards`): the splits are then streams read from disk, with the feature
    settings fixed when they were written (the options here other than augmentation and
    ``skip_bad`` do not apply).

    ``lazy``: keep only paths and compute each clip's features on access (`AudioFileDataset`, in
    DataLoader workers with ``--train.num_workers``), so memory does not grow with the number of
    files; None (default) decides by size (lazy when the features would pass ``LAZY_BYTES``).
    Both paths give identical tensors. Either way one pass reads every file first (a bad file
    is found before training; the train split's statistics with ``normalize="dataset"``).
    ``skip_bad``: an unreadable or too-short file is logged and left out (listed in
    ``info["skipped_files"]``) instead of stopping with its name; with shards, a bad sample is
    skipped and counted.

    ``class_names`` and ``audio_spec`` (a finished run's, carried by evaluate and ``--resume``):
    the files are labelled by the run's classes (a label it has no class for is refused by name)
    and turned into features as the run's were, with its training statistics under
    ``normalize="dataset"``, not this folder's (the feature options here then do not apply).
    Shards are read only when their feature spec is the run's, else refused; their classes are
    relabelled by name as a folder's are.
    """
    if max_train_per_class < 0:
        raise ConfigError(f"max_train_per_class must be >= 0, got {max_train_per_class}")
    augmenter = SpecAugment(freq_masks=freq_masks, freq_width=freq_width, time_masks=time_masks, time_width=time_width) if augment else None
    if is_shard_source(root):  # written by `attnlab shard` (a folder or a pattern): features and split were fixed then
        from attnlab.data.audio_shards import load_audio_shards

        task = load_audio_shards(root, seed=seed, skip_bad=skip_bad, batch_augment=augmenter, class_names=class_names)
        _check_shards_fit(root, task, audio_spec)
        return task
    if audio_spec is not None:
        spec = AudioSpec.from_dict(audio_spec)
    else:
        spec = AudioSpec(sample_rate=sample_rate, duration=duration, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                         f_min=f_min, f_max=f_max, top_db=top_db, normalize=normalize)
    run_classes = None if class_names is None else [str(c) for c in class_names]
    files, labels, class_names, splits, layout = list_audio_files(root, layout=layout, seed=seed, val_fraction=val_fraction,
                                                                  test_fraction=test_fraction,
                                                                  min_classes=2 if run_classes is None else 1,
                                                                  finished=run_classes is not None)
    if run_classes is not None:  # the run's class order, whatever this folder holds
        labels = np.asarray(class_positions(root, class_names, run_classes), dtype=np.int64)[labels]
        class_names = run_classes
    parts = [np.asarray(s, dtype=np.int64) for s in splits]  # train, val, test
    if max_train_per_class:
        rng = np.random.default_rng(seed)
        parts[0] = np.sort(np.concatenate([rng.permutation(parts[0][labels[parts[0]] == c])[:max_train_per_class]
                                           for c in range(len(class_names))]))
    used = np.sort(np.concatenate(parts))  # (U,) positions in the file list, scanned in this order
    if lazy is None:  # float32 features past the budget: compute them on access instead
        lazy = len(used) * int(np.prod(spec.shape)) * 4 > LAZY_BYTES
    spec, bad, feats = scan_audio([files[i] for i in used], np.isin(used, parts[0]), spec, keep=not lazy, skip_bad=skip_bad,
                                  fit=audio_spec is None)
    bad_files = used[bad]
    if len(bad_files):  # the split is of the listed files, so dropping a bad one moves no other file between splits
        parts = [p[~np.isin(p, bad_files)] for p in parts]
        if run_classes is None:  # a finished run's training is what counts
            _check_trained(files, labels, class_names, parts, why="its training files were skipped as unreadable")
    info = {"audio": spec.to_dict(), "layout": layout, "root": str(root),
            "splits": "official FSDD (index 0-4 test)" if layout == "fsdd" else f"per class by seed {seed}",
            "skipped_files": [str(files[i]) for i in bad_files]}
    if lazy:
        train, val, test = (AudioFileDataset([files[i] for i in p], labels[p], spec, indices=torch.from_numpy(p)) for p in parts)
    else:
        y = torch.from_numpy(labels).long()
        rows = [torch.from_numpy(np.searchsorted(used, p)) for p in parts]  # each split's rows of feats
        train, val, test = (TensorPairDataset(feats[r], y[torch.from_numpy(p)], indices=torch.from_numpy(p))
                            for r, p in zip(rows, parts))
    data = TaskData("audio", train, val, test, num_classes=len(class_names), class_names=class_names,
                    input_shape=spec.shape, batch_augment=augmenter, info=info)
    logger.info("loaded audio from %s (%s layout%s): %s", root, layout, ", decoded on access" if lazy else "", data.summary())
    return data
