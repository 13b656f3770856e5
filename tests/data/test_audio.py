"""Audio data: WAV decoding, resampling, HTK mel filterbank, log-mel, SpecAugment, splits, errors."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.data.audio import (
    AudioSpec,
    SpecAugment,
    fix_length,
    list_audio_files,
    load_audio_task,
    log_mel,
    mel_filterbank,
    prepare_audio,
    read_wav,
    resample,
)
from attnlab.errors import ConfigError, DataError


def write_wav(path: Path, samples: np.ndarray, rate: int, *, sampwidth: int = 2) -> Path:
    """Write float samples in [-1, 1], shape (L,) or (L, channels), as PCM with the stdlib ``wave``."""
    a = np.asarray(samples, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    if sampwidth == 1:
        raw = np.clip(np.round(a * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif sampwidth == 3:
        ints = np.clip(np.round(a * (2**23 - 1)), -(2**23), 2**23 - 1).astype("<i4")
        raw = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        top = 2 ** (8 * sampwidth - 1) - 1
        raw = np.clip(np.round(a * top), -top - 1, top).astype(f"<i{sampwidth}").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(a.shape[1])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def sine(freq: float, rate: int, seconds: float, *, amplitude: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


# --- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampwidth", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_wav_matches_what_wave_wrote(tmp_path, sampwidth, channels):
    rng = np.random.default_rng(sampwidth * 10 + channels)
    bits = 8 * sampwidth
    ints = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(257, channels), dtype=np.int64)
    ints[0, 0], ints[1, 0] = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1  # both extremes
    if sampwidth == 1:  # 8-bit WAV is unsigned, offset 128
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = ints.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :sampwidth].tobytes()  # little-endian low bytes
    path = tmp_path / "x.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(11025)
        w.writeframes(raw)
    got, rate = read_wav(path)
    assert rate == 11025 and got.shape == (channels, 257) and got.dtype == np.float32
    np.testing.assert_array_equal(got.T.astype(np.float64), (ints / 2.0 ** (bits - 1)).astype(np.float32))
    assert got.min() == -1.0 and got.max() <= 1.0


def test_read_wav_float_format(tmp_path):
    data = np.array([0.0, 0.25, -0.5, 1.0], dtype="<f4")
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 8000 * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data.nbytes) + data.tobytes()
    path = tmp_path / "f.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    got, rate = read_wav(path)
    assert rate == 8000
    np.testing.assert_array_equal(got[0], data)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello, not audio", "is not a readable audio file: Format not recognised"),
        (b"RIFF\x10\x00\x00\x00WAVEjunk\x00\x00\x00\x00", "is not a readable audio file: .*data"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken_7.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_wav(path)
    assert "broken_7.wav" in str(info.value)


def test_truncated_short_and_unsupported_files(tmp_path):
    good = write_wav(tmp_path / "good.wav", sine(440, 8000, 0.1), 8000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[:-100])  # a cut-off data chunk: the frames present, as libsndfile reads it
    got, _ = read_wav(cut)
    full, _ = read_wav(good)
    assert got.shape == (1, 800 - 50)
    np.testing.assert_array_equal(got, full[:, :750])
    short = write_wav(tmp_path / "short.wav", sine(440, 8000, 0.005), 8000)  # 40 samples < n_fft
    with pytest.raises(DataError, match=r"short\.wav is too short"):
        prepare_audio(short, AudioSpec())
    adpcm = bytearray(good.read_bytes())
    adpcm[20:22] = struct.pack("<H", 2)  # format tag 2: MS ADPCM
    (tmp_path / "adpcm.wav").write_bytes(bytes(adpcm))
    with pytest.raises(DataError, match=r"adpcm\.wav is not a readable audio file: .*ADPCM"):
        read_wav(tmp_path / "adpcm.wav")
    with pytest.raises(DataError, match="cannot read audio file"):
        read_wav(tmp_path / "missing.wav")


# --- resampling and length ------------------------------------------------------------------------


@pytest.mark.parametrize("orig, new, freq", [(8000, 16000, 440.0), (22050, 8000, 1000.0), (16000, 8000, 3000.0), (8000, 11025, 2500.0)])
def test_resample_keeps_a_sines_frequency(orig, new, freq):
    x = sine(freq, orig, 0.5, phase=0.3)
    y = resample(x, orig, new)
    assert len(y) == math.ceil(len(x) * new / orig)
    expected = sine(freq, new, len(y) / new, phase=0.3)[: len(y)]
    interior = slice(len(y) // 10, -len(y) // 10)  # away from the zero-padded edges
    np.testing.assert_allclose(y[interior], expected[interior], atol=5e-3)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spectrum) * new / len(y) - freq) < new / len(y) + 1e-9


def test_resample_removes_what_the_new_rate_cannot_hold():
    tone = sine(6000.0, 22050, 0.5)  # above 4 kHz, the Nyquist frequency of 8 kHz
    y = resample(tone, 22050, 8000)
    assert np.sqrt(np.mean(y[400:-400] ** 2)) < 0.01 * np.sqrt(np.mean(tone**2))


def test_fix_length_centres_short_clips_and_keeps_the_loudest_window():
    clip = np.arange(1, 5, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(clip, 8), [0, 0, 1, 2, 3, 4, 0, 0])
    long = np.zeros(100, dtype=np.float32)
    long[60:70] = 1.0
    window = fix_length(long, 20)
    assert len(window) == 20 and window.sum() == 10


# --- features -------------------------------------------------------------------------------------


def _reference_filterbank(n_mels, n_fft, rate, f_min, f_max):
    """Plain-math HTK triangles in float64, one loop per filter and bin."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    lo, hi = mel(f_min), mel(f_max)
    points = [hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bank = torch.zeros(n_fft // 2 + 1, n_mels, dtype=torch.float64)
    for m in range(n_mels):
        left, centre, right = points[m], points[m + 1], points[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * rate / n_fft
            if left <= f <= centre:
                bank[k, m] = (f - left) / (centre - left)
            elif centre < f <= right:
                bank[k, m] = (right - f) / (right - centre)
    return bank


@pytest.mark.parametrize("n_mels, n_fft, rate, f_min, f_max", [(32, 256, 8000, 0.0, 4000.0), (40, 512, 16000, 20.0, 7600.0), (8, 64, 8000, 100.0, 3000.0)])
def test_mel_filterbank_matches_float64_reference(n_mels, n_fft, rate, f_min, f_max):
    got = mel_filterbank(n_mels, n_fft, rate, f_min=f_min, f_max=f_max)
    torch.testing.assert_close(got.double(), _reference_filterbank(n_mels, n_fft, rate, f_min, f_max), rtol=0, atol=1e-6)


def test_log_mel_peak_is_at_the_sines_frequency(tmp_path):
    spec = AudioSpec()  # 8 kHz, n_fft 256, 32 mels
    centres = 700.0 * (10.0 ** (np.linspace(0, 2595.0 * math.log10(1 + 4000 / 700), 34)[1:-1] / 2595.0) - 1.0)
    for band in (5, 12, 25):
        path = write_wav(tmp_path / f"tone{band}.wav", sine(centres[band], 8000, 0.5), 8000)
        x = prepare_audio(path, spec)  # (1, 32, 64)
        assert x.shape == (1, 32, 64) and torch.isfinite(x).all()
        assert int(x[0].mean(dim=1).argmax()) == band
    # the linear spectrum peaks at bin f / (rate / n_fft)
    wave_ = torch.from_numpy(sine(1000.0, 8000, 1.024)).float()[None]
    power = torch.stft(wave_, 256, hop_length=128, window=torch.hann_window(256), return_complex=True).abs()
    assert int(power[0].mean(dim=1).argmax()) == 32


def test_resampled_file_gives_the_same_features(tmp_path):
    spec = AudioSpec()
    at8 = prepare_audio(write_wav(tmp_path / "a.wav", sine(700.0, 8000, 0.6), 8000), spec)
    at16 = prepare_audio(write_wav(tmp_path / "b.wav", np.stack([sine(700.0, 16000, 0.6)] * 2, 1), 16000), spec)
    assert int(at8[0].mean(1).argmax()) == int(at16[0].mean(1).argmax())
    assert (at8 - at16).abs().mean() < 0.1


def test_silent_clip_gives_zeros_not_nan():
    out = log_mel(torch.zeros(2, AudioSpec().num_samples), AudioSpec())
    assert torch.equal(out, torch.zeros_like(out))


def test_audio_spec_validation():
    with pytest.raises(ConfigError, match="f_max"):
        AudioSpec(f_max=5000.0)
    with pytest.raises(ConfigError, match="normalize must be one of"):
        AudioSpec(normalize="global")
    with pytest.raises(ConfigError, match="fewer than n_fft"):
        AudioSpec(duration=0.01)
    spec = AudioSpec(n_mels=40, duration=0.5, hop_length=100)
    assert spec.shape == (1, 40, 40) and AudioSpec.from_dict(spec.to_dict()) == spec


# --- SpecAugment ----------------------------------------------------------------------------------


def test_spec_augment_masks_whole_bands_within_width():
    x = torch.randn(16, 1, 32, 64) + 10.0  # no natural zeros
    out = SpecAugment(freq_masks=2, freq_width=4, time_masks=1, time_width=8)(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    zero = out == 0
    rows = zero.all(dim=3)[:, 0]  # (B, F) fully masked mel bins
    cols = zero.all(dim=2)[:, 0]  # (B, T) fully masked frames
    assert (zero == (rows[:, None, :, None] | cols[:, None, None, :])).all()  # masks are whole bands
    assert (rows.sum(1) <= 8).all() and (cols.sum(1) <= 8).all() and rows.any() and cols.any()
    kept = ~zero
    assert torch.equal(out[kept], x[kept])
    again = SpecAugment(freq_masks=2, freq_width=4, time_masks=1, time_width=8)(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    single = SpecAugment(freq_masks=0, time_masks=0)(x[0])
    assert torch.equal(single, x[0])


# --- sources and splits ---------------------------------------------------------------------------


def _fsdd_folder(root: Path, digits=(1, 3), speakers=("ann", "bob"), count=8, rate=8000) -> Path:
    rng = np.random.default_rng(0)
    for d in digits:
        for s in speakers:
            for i in range(count):
                freq = 300.0 + 400.0 * d + rng.uniform(-20, 20)
                write_wav(root / f"{d}_{s}_{i}.wav", sine(freq, rate, rng.uniform(0.2, 0.4)), rate)
    return root


def test_fsdd_split_by_index_on_synthetic_files(tmp_path):
    root = _fsdd_folder(tmp_path / "fsdd")
    data = load_audio_task(root, seed=0, val_fraction=0.25, n_mels=16, duration=0.256)
    files = sorted(root.glob("*.wav"))
    index = lambda ds: {files[int(i)].name for i in ds.indices}  # noqa: E731
    test, val, train = index(data.test), index(data.val), index(data.train)
    assert test == {p.name for p in files if int(p.stem.split("_")[2]) <= 4}
    assert not (train & val) and not (train & test) and train | val | test == {p.name for p in files}
    assert len(val) == 2 * round(6 * 0.25) and data.class_names == ["1", "3"]
    assert data.input_shape == (1, 16, 16) and data.info["layout"] == "fsdd"
    assert all(int(files[int(i)].name[0]) == int(data.class_names[int(y)]) for i, y in zip(data.train.indices, data.train.y))
    # predict replays training's preprocessing exactly
    j = int(data.test.indices[3])
    torch.testing.assert_close(prepare_audio(files[j], AudioSpec.from_dict(data.info["audio"])), data.test.x[3])


def test_fsdd_official_split_on_the_real_dataset(data_dir):
    root = data_dir / "fsdd" / "recordings"
    if not root.is_dir():
        pytest.skip(f"FSDD not found at {root}")
    found = list_audio_files(root, seed=0)
    train, val, test = found.splits
    assert found.layout == "fsdd" and found.class_names == [str(d) for d in range(10)]
    assert len(test) == 300 and len(train) + len(val) == len(found.files) - 300
    names = [found.files[i].stem.split("_") for i in range(len(found.files))]
    assert all(int(names[i][2]) <= 4 for i in test) and all(int(names[i][2]) >= 5 for i in np.concatenate([train, val]))
    assert all(found.class_names[found.labels[i]] == names[i][0] for i in range(len(names)))


def test_class_folders_split_by_seed(tmp_path):
    for name, freq in (("low", 400.0), ("high", 2000.0)):
        for i in range(10):
            write_wav(tmp_path / "src" / name / f"{i}.wav", sine(freq + i, 8000, 0.3), 8000)
    a = list_audio_files(tmp_path / "src", seed=1, val_fraction=0.2, test_fraction=0.2)
    b = list_audio_files(tmp_path / "src", seed=1, val_fraction=0.2, test_fraction=0.2)
    c = list_audio_files(tmp_path / "src", seed=2, val_fraction=0.2, test_fraction=0.2)
    assert a.layout == "folders" and a.class_names == ["high", "low"]
    assert all(np.array_equal(x, y) for x, y in zip(a.splits, b.splits))
    assert not all(np.array_equal(x, y) for x, y in zip(a.splits, c.splits))
    assert [len(s) for s in a.splits] == [12, 4, 4]
    data = load_audio_task(tmp_path / "src", seed=1, normalize="dataset", duration=0.5)
    assert abs(float(data.train.x.mean())) < 1e-3 and abs(float(data.train.x.std()) - 1) < 1e-2
    assert data.info["audio"]["normalize"] == "dataset" and data.info["audio"]["std"] > 0


def test_one_class_folder_is_read_with_a_runs_classes(tmp_path):
    for i in range(10):
        write_wav(tmp_path / "one" / "low" / f"{i}.wav", sine(400.0 + i, 8000, 0.3), 8000)
    with pytest.raises(DataError, match="only one class folder"):  # training needs two
        load_audio_task(tmp_path / "one", duration=0.256, n_mels=16)
    # scoring it with a run's classes (evaluate RUN --data one): labelled as the run's "low"
    data = load_audio_task(tmp_path / "one", duration=0.256, n_mels=16, class_names=["high", "low", "mid"])
    assert data.class_names == ["high", "low", "mid"] and set(data.test.y.tolist()) == {1} and len(data.test) >= 1


def test_fsdd_test_recordings_alone_are_scored_with_a_runs_classes_and_spec(tmp_path):
    """evaluate RUN --data held-out/ where held-out/ holds only FSDD test recordings (index 0-4):
    a finished run scores them (its statistics, not ones fitted on an empty training split);
    training on them is still refused."""
    trained = load_audio_task(_fsdd_folder(tmp_path / "all", digits=(1, 3)), n_mels=16, duration=0.256, normalize="dataset")
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for f in sorted((tmp_path / "all").glob("*_[0-4].wav")):
        (held_out / f.name).write_bytes(f.read_bytes())
    with pytest.raises(DataError, match=r"index 0-4 \(test\) and 5\+ \(train\); found 20 and 0"):
        load_audio_task(held_out, n_mels=16, duration=0.256)
    data = load_audio_task(held_out, class_names=trained.class_names, audio_spec=trained.info["audio"])
    assert len(data.train) == len(data.val) == 0 and len(data.test) == 20
    assert data.info["audio"] == trained.info["audio"]
    torch.testing.assert_close(data.test.x, trained.test.x, rtol=0, atol=0)  # the same files, the same features
    assert torch.equal(data.test.y, trained.test.y)


def test_source_errors(tmp_path):
    with pytest.raises(DataError, match="audio folder not found"):
        list_audio_files(tmp_path / "nope")
    (tmp_path / "loose").mkdir()
    write_wav(tmp_path / "loose" / "hello.wav", sine(440, 8000, 0.2), 8000)
    with pytest.raises(DataError, match=r"do not follow the FSDD naming .* e\.g\. hello\.wav"):
        list_audio_files(tmp_path / "loose")
    write_wav(tmp_path / "one" / "a" / "x.wav", sine(440, 8000, 0.2), 8000)
    with pytest.raises(DataError, match="only one class folder"):
        list_audio_files(tmp_path / "one")
    with pytest.raises(ConfigError, match="layout must be one of"):
        list_audio_files(tmp_path / "one", layout="csv")
    bad = _fsdd_folder(tmp_path / "bad", digits=(0, 1), speakers=("x",), count=6)
    (bad / "1_x_3.wav").write_bytes(b"RIFF....WAVEnothing")
    with pytest.raises(DataError, match=r"1_x_3\.wav"):
        load_audio_task(bad, n_mels=16)
