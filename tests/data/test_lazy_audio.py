"""Audio folders decoded on access: the same tensors as the in-memory loader bit for bit (both
normalisations, in DataLoader workers too), streaming statistics equal to ones over every
value, unreadable files named or skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from attnlab.data.audio import load_audio_task
from attnlab.data.lazy_audio import AudioFileDataset, FeatureMoments
from attnlab.errors import DataError
from tests.data.test_audio import sine, write_wav

SMALL = {"duration": 0.256, "n_mels": 16}


def audio_folder(root: Path, per_class: int = 6) -> list[Path]:
    """Three classes of tones at 8 and 16 kHz, mono and stereo, shorter and longer than 0.256 s."""
    rng = np.random.default_rng(0)
    files = []
    for c, (name, freq) in enumerate((("high", 2400.0), ("low", 350.0), ("mid", 1000.0))):
        for k in range(per_class):
            rate = 16000 if (k + c) % 3 == 0 else 8000
            x = sine(freq * rng.uniform(0.97, 1.03), rate, rng.uniform(0.1, 0.4)) + 0.01 * rng.standard_normal(1)
            if k % 4 == 1:
                x = np.stack([x, 0.5 * x], axis=1)  # stereo
            files.append(write_wav(root / name / f"{k}.wav", x, rate))
    return files


@pytest.mark.parametrize("normalize", ["utterance", "dataset"])
def test_lazy_folder_gives_the_in_memory_tensors(tmp_path, normalize):
    audio_folder(tmp_path)
    eager = load_audio_task(tmp_path, normalize=normalize, lazy=False, **SMALL)
    lazy = load_audio_task(tmp_path, normalize=normalize, lazy=True, **SMALL)
    assert isinstance(lazy.train, AudioFileDataset) and not isinstance(eager.train, AudioFileDataset)
    assert lazy.info == eager.info and lazy.class_names == eager.class_names
    for a, b in ((eager.train, lazy.train), (eager.val, lazy.val), (eager.test, lazy.test)):
        assert torch.equal(a.indices, b.indices) and len(a) == len(b) > 0
        for i in range(len(a)):
            xa, ya = a[i]
            xb, yb = b[i]
            assert xb.shape == (1, 16, 16) and torch.equal(xa, xb), f"item {i} differs"
            assert int(ya) == int(yb)


def test_lazy_folder_in_two_workers_matches_in_memory_batches(tmp_path):
    audio_folder(tmp_path)
    eager = load_audio_task(tmp_path, normalize="dataset", lazy=False, **SMALL)
    lazy = load_audio_task(tmp_path, normalize="dataset", lazy=True, **SMALL)
    got = list(DataLoader(lazy.train, batch_size=4, num_workers=2))
    want = list(DataLoader(eager.train, batch_size=4))
    assert len(got) == len(want) == -(-len(eager.train) // 4)
    for (xg, yg), (xw, yw) in zip(got, want):
        assert torch.equal(xg, xw) and torch.equal(yg, yw)


def test_dataset_statistics_streamed_equal_ones_over_every_value(tmp_path):
    audio_folder(tmp_path)
    task = load_audio_task(tmp_path, normalize="dataset", lazy=True, **SMALL)
    raw = load_audio_task(tmp_path, normalize="dataset", lazy=False, **SMALL)
    spec = task.info["audio"]
    x = raw.train.x.double() * spec["std"] + spec["mean"]  # the training split's dB features, (N, 1, F, T)
    assert abs(float(x.mean()) - spec["mean"]) < 1e-4 and abs(float(x.std(correction=0)) - spec["std"]) < 1e-4
    rng = np.random.default_rng(0)
    chunks = [torch.from_numpy(rng.normal(-40, 20, size)).float() for size in (7, 1, 300, 64)]
    moments = FeatureMoments()
    for c in chunks:
        moments.add(c)
    every = torch.cat(chunks).double()
    mean, std = moments.stats()
    assert mean == pytest.approx(float(every.mean()), rel=1e-13) and std == pytest.approx(float(every.std(correction=0)), rel=1e-12)


def test_unreadable_file_is_named_or_skipped(tmp_path):
    files = audio_folder(tmp_path)
    bad = tmp_path / "low" / "3.wav"
    bad.write_bytes(bad.read_bytes()[:30])  # cut inside the header
    for lazy in (False, True):
        with pytest.raises(DataError, match=str(bad)):
            load_audio_task(tmp_path, lazy=lazy, **SMALL)
    task = load_audio_task(tmp_path, lazy=True, skip_bad=True, **SMALL)
    assert task.info["skipped_files"] == [str(bad)]
    kept = torch.cat([task.train.indices, task.val.indices, task.test.indices]).sort().values
    assert len(kept) == len(files) - 1 and sorted(files).index(bad) not in kept.tolist()


def test_file_gone_after_loading_raises_naming_it(tmp_path):
    audio_folder(tmp_path)
    task = load_audio_task(tmp_path, lazy=True, **SMALL)
    victim = Path(str(task.train.paths[0]))
    victim.write_bytes(b"")
    with pytest.raises(DataError, match=str(victim)):
        task.train[0]


def test_lazy_by_default_past_the_size_budget(tmp_path, monkeypatch):
    from attnlab.data import audio

    audio_folder(tmp_path)
    assert not isinstance(load_audio_task(tmp_path, **SMALL).train, AudioFileDataset)
    monkeypatch.setattr(audio, "LAZY_BYTES", 18 * 16 * 16 * 4)  # the features of 18 clips; the folder has 18
    assert not isinstance(load_audio_task(tmp_path, **SMALL).train, AudioFileDataset)
    monkeypatch.setattr(audio, "LAZY_BYTES", 17 * 16 * 16 * 4)
    assert isinstance(load_audio_task(tmp_path, **SMALL).train, AudioFileDataset)
