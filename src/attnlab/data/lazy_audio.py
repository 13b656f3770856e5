"""Audio files decoded on access, so memory does not grow with the number of files.

`AudioFileDataset` holds only paths and labels (as NumPy arrays, not Python lists: forked
DataLoader workers that touch Python objects' reference counts copy the pages they sit on,
which grows every worker's memory with the data set, PyTorch issue #13246). Each item is read,
resampled, cut to length and turned into log-mel features in whichever process fetches it (a
DataLoader worker when ``--train.num_workers`` > 0) through `attnlab.data.audio_features`, one
clip at a time as the in-memory loader computes them, so both give the same tensors bit for bit.

The ``normalize="dataset"`` statistics come from `FeatureMoments`: count, mean and sum of
squared deviations in float64, merged one clip at a time (Chan, Golub & LeVeque 1979, the
pairwise update of Welford's method): O(1) memory, and no cancellation as in
E[x^2] - E[x]^2. The in-memory loader uses the same scan (`scan_audio`), in the same order, so
the two paths get the same mean and std to the last bit.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnlab.data.audio_features import (
    AudioSpec,
    clip_features,
    load_clip,
    normalise_dataset,
    raw_spec,
)
from attnlab.data.base import ClassIndexTensors, FileDataset, read_each
from attnlab.errors import DataError

__all__ = ["FeatureMoments", "AudioFileDataset", "AudioSampleDecoder", "scan_audio"]


class FeatureMoments:
    """Streaming mean and population std of every value of the feature tensors added."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: Tensor) -> None:
        """Merge one tensor's values (any shape), reduced in float64."""
        x = x.double()
        n = x.numel()
        if n == 0:
            return
        mean = float(x.mean())
        m2 = float((x - mean).square().sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    def stats(self) -> tuple[float, float]:
        """(mean, population std), the std floored at 1e-5 (a silent training split is not NaN)."""
        if self.count == 0:
            raise DataError("no training clips to compute the dataset normalisation statistics from")
        return self.mean, max(float(np.sqrt(self.m2 / self.count)), 1e-5)


def scan_audio(
    paths: Sequence[Path], count: np.ndarray, spec: AudioSpec, *, keep: bool = False, skip_bad: bool = False,
    fit: bool = True,
) -> tuple[AudioSpec, list[int], Tensor | None]:
    """Decode each file once: (``spec`` with the dataset statistics of the files where ``count``
    is True when it normalises by "dataset", positions of unreadable files, and with ``keep`` the
    features (N, 1, n_mels, frames) exactly as `AudioFileDataset` yields them, zeros where a file
    was unreadable; else None).

    ``fit=False`` keeps the statistics ``spec`` holds (a finished run's: its features mean what
    the model learnt, whatever files are read now). An unreadable or too-short file raises the
    `DataError` naming it, or with ``skip_bad`` is logged and its position returned. Without
    ``keep`` memory stays O(1) in the number of files.
    """
    dataset = fit and spec.normalize == "dataset"
    feature_spec = raw_spec(spec) if dataset else spec  # dataset mode: keep dB, normalise once stats are known
    moments, bad = FeatureMoments(), []
    kept = torch.zeros(len(paths), *spec.shape) if keep else None
    for i, wave in read_each(paths, lambda path: load_clip(path, spec), bad, skip_bad=skip_bad, what="audio"):  # (L,)
        if kept is None and not (dataset and count[i]):
            continue  # lazy, per-utterance: reading the file checked it; features come on access
        feats = clip_features(wave, feature_spec)  # (1, n_mels, frames)
        if dataset and count[i]:
            moments.add(feats)
        if kept is not None:
            kept[i] = feats
    if dataset:
        mean, std = moments.stats()
        spec = AudioSpec.from_dict({**spec.to_dict(), "mean": mean, "std": std})
        if kept is not None:
            kept = normalise_dataset(kept, spec)  # elementwise, as log_mel normalises: the same bits
    return spec, bad, kept


class AudioFileDataset(FileDataset):
    """``(x, y)`` pairs computed from audio files on each access (`FileDataset`: paths and labels only).

    ``paths[i]`` is read, mono-ised, resampled, cut or padded to the spec's duration and turned
    into normalised log-mel features (`attnlab.data.audio_features`, shared with
    `prepare_audio`).

    Shape: item x (1, n_mels, frames) float32, y () int64.
    """

    what = "audio"

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], spec: AudioSpec, *, indices: Tensor | None = None):
        super().__init__(paths, labels, indices=indices)
        self.spec = spec

    @property
    def item_shape(self) -> tuple[int, int, int]:
        """(1, n_mels, frames): every item's x (DataLoader workers share fixed-shape batch slots)."""
        return self.spec.shape

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return clip_features(load_clip(str(self.paths[index]), self.spec), self.spec), self.y[index]


class AudioSampleDecoder:
    """A shard sample ``{"wav": the file's bytes, "cls": class index}`` -> ``(x, y)``, through
    the same pipeline as `AudioFileDataset` (a class, not a closure: spawned DataLoader workers
    receive it by value). Errors name the sample as ``shard:key``. ``positions``: see `ClassIndexTensors`.

    Shape: -> x (1, n_mels, frames) float32, y () int64.
    """

    def __init__(self, spec: AudioSpec, positions: list[int] | None = None):
        self.spec = spec
        self.item_shape = spec.shape  # (1, n_mels, frames) of every decoded x
        self.labels = ClassIndexTensors(positions)

    def __call__(self, sample: dict[str, bytes], where: str) -> tuple[Tensor, Tensor]:
        if "wav" not in sample or "cls" not in sample:
            raise DataError(f"{where}: an audio sample needs .wav and .cls members, has {sorted(sample)}")
        wave = load_clip(io.BytesIO(sample["wav"]), self.spec, name=where)
        return clip_features(wave, self.spec), self.labels(sample["cls"], where)
