"""Audio classification data: WAV files -> fixed-length clips -> log-mel spectrograms.

Pipeline (training and `prepare_audio` share every step, so predict replays it exactly; steps
1-3 live in `attnlab.data.wav`):

1. `read_wav`: any WAV encoding (and FLAC/OGG) decoded by ``soundfile`` (libsndfile),
   scaled to [-1, 1], shape (channels, samples).
2. Mono by averaging channels; `resample` to ``sample_rate`` with ``scipy.signal.resample_poly``
   (polyphase, Kaiser-windowed anti-aliasing low-pass).
3. `fix_length`: a longer clip keeps its loudest window of ``duration`` seconds, a shorter
   one is zero-padded on both sides (centred), so utterances sit in the middle of the input.
4. `log_mel`: ``torch.stft`` (periodic Hann window, centred frames) power spectrogram ->
   HTK mel filterbank (Young et al., HTK Book: mel = 2595 log10(1 + f / 700)) -> dB,
   floored ``top_db`` below the clip's peak -> normalised per utterance (default) or with
   the train split's mean and std (``normalize="dataset"``).

`SpecAugment` (Park et al. 2019, frequency and time masking) is the training-time
``TaskData.batch_augment``. Sources: the Free Spoken Digit Dataset naming
``{digit}_{speaker}_{index}.wav`` in one folder (official split: index 0-4 test, the rest
train/val), or ``root/<class>/*.wav`` split per class by ``seed``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from attnlab.config import check_choice, check_positive
from attnlab.data.base import TaskData, TensorPairDataset, check_fractions, per_class_split
from attnlab.data.wav import fix_length, read_wav, resample
from attnlab.errors import ConfigError, DataError

__all__ = [
    "AudioSpec", "AudioFiles", "SpecAugment", "FSDD_NAME", "list_audio_files", "read_wav", "resample", "fix_length", "load_clip",
    "mel_filterbank", "hz_to_mel", "mel_to_hz", "log_mel", "prepare_audio", "load_audio_task",
]

logger = logging.getLogger(__name__)

FSDD_NAME = re.compile(r"^(\d+)_([A-Za-z0-9-]+)_(\d+)\.wav$", re.IGNORECASE)
_FEATURE_BATCH = 256  # clips per STFT call while preparing a data set: bounds peak memory


@dataclass
class AudioSpec:
    """Everything needed to turn a WAV file into a model input; saved in the run's data.json."""

    sample_rate: int = 8000
    duration: float = 1.024  # seconds; 8,192 samples at 8 kHz -> 64 frames at hop 128
    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 32
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    top_db: float = 80.0
    normalize: str = "utterance"  # "utterance" | "dataset"
    mean: float = 0.0  # dataset statistics of the dB features ("dataset" mode)
    std: float = 1.0

    def __post_init__(self) -> None:
        check_positive("AudioSpec", sample_rate=self.sample_rate, duration=self.duration, n_fft=self.n_fft,
                       hop_length=self.hop_length, n_mels=self.n_mels, top_db=self.top_db, std=self.std)
        check_choice("AudioSpec", "normalize", self.normalize, ("utterance", "dataset"))
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= nyquist:
            raise ConfigError(f"AudioSpec: need 0 <= f_min < f_max <= sample_rate / 2 = {nyquist:g}, got f_min={self.f_min}, f_max={f_max}")
        if self.num_samples < self.n_fft or self.frames < 1:
            raise ConfigError(f"AudioSpec: duration {self.duration} s gives {self.num_samples} samples, fewer than n_fft={self.n_fft}")

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))

    @property
    def frames(self) -> int:
        """STFT frames kept: one per hop (the centred STFT's trailing extra frame is dropped)."""
        return self.num_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, n_mels, frames) of a prepared input."""
        return (1, self.n_mels, self.frames)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AudioSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --- one clip, as the model takes it -----------------------------------------------------------


def load_clip(path: str | Path, spec: AudioSpec) -> np.ndarray:
    """Read, mono-ise, resample and fix the length of one file. Shape: -> (spec.num_samples,)."""
    samples, rate = read_wav(path)
    mono = samples.mean(axis=0)  # (L,)
    if len(mono) * spec.sample_rate < spec.n_fft * rate:
        raise DataError(f"{path} is too short: {len(mono)} samples at {rate} Hz, need at least {spec.n_fft / spec.sample_rate * 1000:.0f} ms")
    return fix_length(resample(mono, rate, spec.sample_rate), spec.num_samples)


# --- features ----------------------------------------------------------------------------------


def hz_to_mel(hz: Any) -> Any:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: Any) -> Any:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, *, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular HTK filters (peak 1, no area normalisation) over the STFT bin frequencies.

    Filter m rises from mel point m to m + 1 and falls to m + 2, with ``n_mels + 2`` points
    equally spaced in mel between ``f_min`` and ``f_max``.

    Shape: -> (n_fft // 2 + 1, n_mels) float32.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (F,)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))  # (n_mels + 2,)
    rise = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])  # (F, n_mels)
    fall = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])
    bank = np.maximum(0.0, np.minimum(rise, fall))
    if (bank.max(axis=0) == 0).any():
        logger.warning("mel filterbank: %d of %d filters cover no STFT bin; use fewer mels or a larger n_fft",
                       int((bank.max(axis=0) == 0).sum()), n_mels)
    return torch.from_numpy(bank.astype(np.float32))


def log_mel(waves: Tensor, spec: AudioSpec) -> Tensor:
    """Waveforms to normalised log-mel features.

    Shape: waves (B, L) with L = spec.num_samples -> (B, 1, n_mels, frames) float32.
    """
    window = torch.hann_window(spec.n_fft, periodic=True, dtype=waves.dtype)
    stft = torch.stft(waves, spec.n_fft, hop_length=spec.hop_length, window=window, center=True,
                      pad_mode="constant", return_complex=True)  # (B, F, frames + 1)
    power = stft[..., : spec.frames].abs().square()  # (B, F, T)
    bank = mel_filterbank(spec.n_mels, spec.n_fft, spec.sample_rate, f_min=spec.f_min, f_max=spec.f_max)
    mel = torch.einsum("bft,fm->bmt", power, bank.to(power.dtype))  # (B, n_mels, T)
    db = 10.0 * torch.log10(mel.clamp(min=1e-10))
    db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - spec.top_db)  # per-clip floor, as librosa's top_db
    if spec.normalize == "utterance":
        # an all-silent clip has std 0: its features become zeros, not NaN
        db = (db - db.mean(dim=(1, 2), keepdim=True)) / db.std(dim=(1, 2), keepdim=True).clamp(min=1e-5)
    else:
        db = (db - spec.mean) / spec.std
    return db.unsqueeze(1).float()


def prepare_audio(path: str | Path, spec: AudioSpec) -> Tensor:
    """One WAV file -> model input exactly as training prepared it. Shape: -> (1, n_mels, frames)."""
    return log_mel(torch.from_numpy(load_clip(path, spec))[None], spec)[0]


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
        widths = torch.randint(0, min(width, size) + 1, (batch, count), generator=generator)
        starts = (torch.rand(batch, count, generator=generator) * (size - widths + 1)).long()  # (B, count)
        pos = torch.arange(size)[None, None, :]  # (1, 1, size)
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
    root: str | Path, *, layout: str = "auto", seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> AudioFiles:
    """Find and label the .wav files of ``root`` and split them (see `load_audio_task` for layouts).

    FSDD: recordings with index 0-4 are the test split (the dataset's official split),
    ``test_fraction`` is unused, and ``val_fraction`` of the rest of each class is validation.
    """
    check_choice("audio", "layout", layout, ("auto", "fsdd", "folders"))
    check_fractions(val_fraction, test_fraction)
    root = Path(root)
    if not root.exists():
        raise DataError(f"audio folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is a file; expected a folder of .wav files (FSDD naming) or of class folders")
    loose = _visible_wavs(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _visible_wavs(d))
    if layout == "auto":
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
        if not len(test) or not len(pool):
            raise DataError(f"{root}: the FSDD split needs recordings with index 0-4 (test) and 5+ (train); "
                            f"found {len(test)} and {len(pool)}")
        tr, va, _ = per_class_split(labels[pool], seed=seed, val_fraction=val_fraction, test_fraction=0.0)
        return AudioFiles(loose, labels.astype(np.int64), [str(c) for c in class_ids], (pool[tr], pool[va], test), layout)
    if not class_dirs:
        raise DataError(f"no class folders with .wav files in {root} (root/<class>/*.wav)")
    if len(class_dirs) < 2:
        raise DataError(f"{root} has only one class folder ({class_dirs[0].name}); classification needs two")
    files, labels = [], []
    for label, d in enumerate(class_dirs):
        found = _visible_wavs(d)
        files += found
        labels += [label] * len(found)
    labels = np.array(labels, dtype=np.int64)
    splits = per_class_split(labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return AudioFiles(files, labels, [d.name for d in class_dirs], splits, layout)


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
) -> TaskData:
    """WAV files -> log-mel inputs (1, n_mels, frames) with labels.

    ``layout``: "fsdd" (``{digit}_{speaker}_{index}.wav`` in ``root``; index 0-4 is the
    test split, ``val_fraction`` of the rest per class is validation), "folders"
    (``root/<class>/*.wav``, split per class by ``seed``) or "auto" (folders if ``root`` holds
    class folders and no loose .wav files). ``max_train_per_class`` > 0 keeps only that many
    training clips per class (quick runs). ``augment`` adds `SpecAugment` masking.
    """
    if max_train_per_class < 0:
        raise ConfigError(f"max_train_per_class must be >= 0, got {max_train_per_class}")
    spec = AudioSpec(sample_rate=sample_rate, duration=duration, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                     f_min=f_min, f_max=f_max, top_db=top_db, normalize=normalize)
    augmenter = SpecAugment(freq_masks=freq_masks, freq_width=freq_width, time_masks=time_masks, time_width=time_width) if augment else None
    files, labels, class_names, splits, layout = list_audio_files(root, layout=layout, seed=seed, val_fraction=val_fraction,
                                                                  test_fraction=test_fraction)
    train_idx, val_idx, test_idx = (np.asarray(s, dtype=np.int64) for s in splits)
    if max_train_per_class:
        rng = np.random.default_rng(seed)
        train_idx = np.sort(np.concatenate([rng.permutation(train_idx[labels[train_idx] == c])[:max_train_per_class]
                                            for c in range(len(class_names))]))
    used = np.sort(np.concatenate([train_idx, val_idx, test_idx]))
    waves = np.zeros((len(files), spec.num_samples), dtype=np.float32)
    for i in used:
        waves[i] = load_clip(files[i], spec)
    if spec.normalize == "dataset":
        raw = dataclasses.replace(spec, normalize="dataset", mean=0.0, std=1.0)
        train_db = torch.cat([log_mel(torch.from_numpy(waves[train_idx[s : s + _FEATURE_BATCH]]), raw)
                              for s in range(0, len(train_idx), _FEATURE_BATCH)]).double()
        spec.mean, spec.std = float(train_db.mean()), max(float(train_db.std(correction=0)), 1e-5)
    feats = torch.zeros(len(files), *spec.shape)
    for s in range(0, len(used), _FEATURE_BATCH):
        chunk = used[s : s + _FEATURE_BATCH]
        feats[torch.from_numpy(chunk)] = log_mel(torch.from_numpy(waves[chunk]), spec)
    y = torch.from_numpy(labels).long()
    train, val, test = (TensorPairDataset(feats[i], y[i], indices=torch.from_numpy(i)) for i in (train_idx, val_idx, test_idx))
    info = {"audio": spec.to_dict(), "layout": layout, "root": str(root),
            "splits": "official FSDD (index 0-4 test)" if layout == "fsdd" else f"per class by seed {seed}"}
    data = TaskData("audio", train, val, test, num_classes=len(class_names), class_names=class_names,
                    input_shape=spec.shape, batch_augment=augmenter, info=info)
    logger.info("loaded audio from %s (%s layout): %s", root, layout, data.summary())
    return data
