"""The audio pipeline: a WAV file -> a fixed-length clip -> normalised log-mel features.

Training (in memory, lazy or from shards) and `prepare_audio` share every step, so predict
replays it exactly; steps 1-3 live in `attnlab.data.wav`:

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

Every loader computes features one clip at a time (`clip_features`): a batched STFT and mel
product may round differently from a single clip's (BLAS blocking depends on the batch), and
the in-memory, lazy and sharded paths must give the same tensors bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from attnlab.config import check_choice, check_positive
from attnlab.data.wav import fix_length, read_wav, resample
from attnlab.errors import ConfigError, DataError

__all__ = ["AudioSpec", "load_clip", "mel_filterbank", "hz_to_mel", "mel_to_hz", "log_mel", "normalise_dataset",
           "clip_features", "raw_spec", "prepare_audio"]

logger = logging.getLogger(__name__)


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


def load_clip(source: str | Path | BinaryIO, spec: AudioSpec, *, name: str | None = None) -> np.ndarray:
    """Read, mono-ise, resample and fix the length of one file (a path, or an open binary file
    that errors call ``name``). Shape: -> (spec.num_samples,)."""
    name = name or str(source)
    samples, rate = read_wav(source, name=name)
    mono = samples.mean(axis=0)  # (L,)
    if len(mono) * spec.sample_rate < spec.n_fft * rate:
        raise DataError(f"{name} is too short: {len(mono)} samples at {rate} Hz, need at least {spec.n_fft / spec.sample_rate * 1000:.0f} ms")
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


@functools.lru_cache(maxsize=8)
def _cached_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float | None) -> Tensor:
    """`mel_filterbank`, built once per setting: features are computed one clip at a time, in
    every DataLoader worker (and its empty-filter warning would repeat per clip). Read-only."""
    return mel_filterbank(n_mels, n_fft, sample_rate, f_min=f_min, f_max=f_max)


def log_mel(waves: Tensor, spec: AudioSpec) -> Tensor:
    """Waveforms to normalised log-mel features.

    Shape: waves (B, L) with L = spec.num_samples -> (B, 1, n_mels, frames) float32.
    """
    window = torch.hann_window(spec.n_fft, periodic=True, dtype=waves.dtype)
    stft = torch.stft(waves, spec.n_fft, hop_length=spec.hop_length, window=window, center=True,
                      pad_mode="constant", return_complex=True)  # (B, F, frames + 1)
    power = stft[..., : spec.frames].abs().square()  # (B, F, T)
    bank = _cached_filterbank(spec.n_mels, spec.n_fft, spec.sample_rate, spec.f_min, spec.f_max)
    mel = torch.einsum("bft,fm->bmt", power, bank.to(power.dtype))  # (B, n_mels, T)
    db = 10.0 * torch.log10(mel.clamp(min=1e-10))
    db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - spec.top_db)  # per-clip floor, as librosa's top_db
    if spec.normalize == "utterance":
        # an all-silent clip has std 0: its features become zeros, not NaN
        db = (db - db.mean(dim=(1, 2), keepdim=True)) / db.std(dim=(1, 2), keepdim=True).clamp(min=1e-5)
    else:
        db = normalise_dataset(db, spec)
    return db.unsqueeze(1).float()


def normalise_dataset(db: Tensor, spec: AudioSpec) -> Tensor:
    """dB features -> (db - mean) / std with the spec's dataset statistics, elementwise: applied
    to features computed with `raw_spec` it gives `log_mel`'s numbers bit for bit."""
    return (db - spec.mean) / spec.std


def raw_spec(spec: AudioSpec) -> AudioSpec:
    """``spec`` giving the un-normalised dB features (what dataset statistics are computed on):
    "dataset" mode with mean 0 and std 1, exact since x - 0 = x and x / 1 = x in floating point."""
    return dataclasses.replace(spec, normalize="dataset", mean=0.0, std=1.0)


def clip_features(wave: np.ndarray, spec: AudioSpec) -> Tensor:
    """One clip's features, computed alone (see the module docstring).

    Shape: wave (spec.num_samples,) float32 -> (1, n_mels, frames) float32.
    """
    return log_mel(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None], spec)[0]


def prepare_audio(path: str | Path, spec: AudioSpec) -> Tensor:
    """One WAV file -> model input exactly as training prepared it. Shape: -> (1, n_mels, frames)."""
    return clip_features(load_clip(path, spec), spec)
