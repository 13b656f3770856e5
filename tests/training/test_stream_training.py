"""Training from a sharded stream: resume is at epoch boundaries, and a run resumed from an
end-of-epoch checkpoint reads every later epoch exactly as the uninterrupted run (nothing
repeated, nothing skipped) and ends with the same weights."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from attnlab.data.shards import ShardStream, write_split
from attnlab.errors import ConfigError
from attnlab.models import create_model
from attnlab.training import ClassificationObjective, TrainConfig, Trainer

SEEN: list[int] = []  # keys decoded in this process (num_workers=0), in order


def _decode(sample, where):
    SEEN.append(int(where.rsplit(":", 1)[1]))  # where = "shard:key"
    x = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
    return torch.from_numpy(x), torch.tensor(int(sample["cls"]))


def _shards(tmp, n=60):
    g = np.random.default_rng(0)
    y = g.integers(0, 3, n)
    x = (g.normal(size=(n, 1, 8, 8)) + y[:, None, None, None]).astype(np.float32)

    def samples():
        for i in range(n):
            buf = io.BytesIO()
            np.save(buf, x[i], allow_pickle=False)
            yield f"{i:06d}", {"npy": buf.getvalue(), "cls": str(int(y[i])).encode()}

    return [(str(tmp / e["file"]), e["count"]) for e in write_split(tmp, "train", samples(), 13)]


def _model():
    torch.manual_seed(0)
    return create_model("vit-tiny", num_classes=3, dim=16, depth=1, num_heads=2, dropout=0.1)


def _config(**kw):
    return TrainConfig(**{**dict(epochs=3, batch_size=8, progress=False, device="cpu", seed=5), **kw})


class _Interrupt(Exception):
    pass


def _epochs_seen(marks: list[int]) -> list[list[int]]:
    return [SEEN[a:b] for a, b in zip(marks, marks[1:])]


def test_resume_at_epoch_boundary_repeats_nothing_and_skips_nothing(tmp_path):
    shards = _shards(tmp_path)
    stream = lambda: ShardStream(shards, _decode, shuffle=True, buffer=10, seed=5)

    SEEN.clear()
    marks = [0]
    straight = Trainer(_model(), ClassificationObjective(3), stream(), None, _config(), run_dir=tmp_path / "a",
                       callbacks=[lambda t, e, r: marks.append(len(SEEN))])
    torch.manual_seed(1)
    straight.fit()
    want = _epochs_seen(marks)
    # 7 whole batches of 8 of the 60 samples are read each epoch, each at most once
    assert len(want) == 3 and all(len(e) == len(set(e)) == 56 and set(e) <= set(range(60)) for e in want)
    assert want[0] != want[1]

    def stop_after_first(trainer, epoch, record):
        marks.append(len(SEEN))
        if epoch == 1:
            trainer.save()
            raise _Interrupt

    SEEN.clear()
    marks = [0]
    first = Trainer(_model(), ClassificationObjective(3), stream(), None, _config(), run_dir=tmp_path / "b",
                    callbacks=[stop_after_first])
    torch.manual_seed(1)
    with pytest.raises(_Interrupt):
        first.fit()
    resumed = Trainer(_model(), ClassificationObjective(3), stream(), None, _config(), run_dir=tmp_path / "b",
                      callbacks=[lambda t, e, r: marks.append(len(SEEN))])
    torch.manual_seed(999)
    resumed.resume()
    assert resumed.state.epoch == 1 and resumed.state.batch_in_epoch == 0
    resumed.fit()
    assert _epochs_seen(marks) == want
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_mid_epoch_checkpoints_are_refused_for_streams(tmp_path):
    stream = ShardStream(_shards(tmp_path), _decode)
    with pytest.raises(ConfigError, match="epoch boundaries"):
        Trainer(_model(), ClassificationObjective(3), stream, None, _config(checkpoint_every=2))
