"""Audio folders as WebDataset shards: the folder loader's tensors and labels, each example once
per epoch, a truncated WAV named as shard:key or skipped and counted."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from attnlab.data.audio import load_audio_task
from attnlab.data.shard_writer import write_shards
from attnlab.errors import DataError
from tests.data.test_lazy_audio import SMALL, audio_folder


def _shards(tmp: Path, **options) -> tuple[Path, Path]:
    root = tmp / "f"
    audio_folder(root)
    out = tmp / "s"
    write_shards(root, out, task="audio", shard_size=5, options={**SMALL, **options})
    return root, out


@pytest.mark.parametrize("normalize", ["utterance", "dataset"])
def test_shards_give_the_folder_tensors(tmp_path, normalize):
    root, out = _shards(tmp_path, normalize=normalize)
    index = json.loads((out / "shards.json").read_text())
    assert index["task"] == "audio" and index["sizes"] == {"train": 12, "val": 3, "test": 3}
    with tarfile.open(out / "train-000000.tar") as tar:
        assert all(name.endswith((".wav", ".cls")) for name in tar.getnames())
    streamed = load_audio_task(out)
    folder = load_audio_task(root, normalize=normalize, lazy=False, **SMALL)
    assert streamed.info["audio"] == folder.info["audio"] and streamed.class_names == folder.class_names
    assert streamed.input_shape == folder.input_shape and streamed.batch_augment is not None
    for a, b in ((folder.val, streamed.val), (folder.test, streamed.test)):
        items = list(b.evaluation_view())
        assert len(items) == len(a) == len(b) > 0
        for k, (x, y) in enumerate(items):  # val / test are written in the folder's order
            assert torch.equal(x, a.x[k]) and int(y) == int(a.y[k])
    # training: shuffled at write time, so compare (features, label) pairs as multisets
    def rows(pairs):
        return sorted((tuple(x.flatten().tolist()), int(y)) for x, y in pairs)

    assert rows(streamed.train.evaluation_view()) == rows(zip(folder.train.x, folder.train.y))


def test_each_training_example_once_per_epoch_in_workers(tmp_path):
    _, out = _shards(tmp_path)
    stream = load_audio_task(out).train
    labels = torch.tensor(stream.class_labels())
    seen = []
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        batch = list(DataLoader(stream, batch_size=None, num_workers=2))
        seen.append([x.flatten()[:8].tolist() for x, _ in batch])
        assert Counter(int(y) for _, y in batch) == Counter(labels.tolist())  # every example, once
        assert len({tuple(r) for r in seen[-1]}) == len(seen[-1]) == 12
    assert seen[0] != seen[1] and sorted(seen[0]) == sorted(seen[1])  # reshuffled, same examples


def _rewrite_member(tar: Path, cut: int) -> str:
    """Truncate the first .wav member of ``tar`` to ``cut`` bytes; returns its key."""
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    victim = next(m.name for m, _ in members if m.name.endswith(".wav"))
    with tarfile.open(tar, "w") as t:
        for m, data in members:
            data = data[:cut] if m.name == victim else data
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    return victim.split(".")[0]


@pytest.mark.parametrize("cut, message", [(30, "is not a readable audio file"), (60, "is too short")])
def test_truncated_wav_is_named_or_skipped_and_counted(tmp_path, cut, message):
    _, out = _shards(tmp_path)
    key = _rewrite_member(out / "train-000001.tar", cut)  # inside the header / a data chunk of 8 samples
    with pytest.raises(DataError, match=rf"train-000001\.tar:{key} {message}"):
        list(load_audio_task(out).train.evaluation_view())
    stream = load_audio_task(out, skip_bad=True).train
    got = list(DataLoader(stream.evaluation_view(), batch_size=None, num_workers=2))
    assert len(got) == 11 and stream.skipped == 1


def test_a_pattern_streams_the_named_audio_shards(tmp_path):
    root, out = _shards(tmp_path)
    whole = load_audio_task(out)
    some = load_audio_task(f"{out}/train-{{000000..000001}}.tar")  # 2 of the 3 training shards (5 + 5 of 12)
    assert len(some.train) == 10 and len(some.val) == len(whole.val) and len(some.test) == len(whole.test)
    assert some.info["shards"].endswith("train-{000000..000001}.tar")
    with pytest.raises(DataError, match="matches no file"):
        load_audio_task(f"{out}/nothing-*.tar")
