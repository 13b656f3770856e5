"""Batch augmentation draws: each DDP rank draws its own pattern, as a function of (seed, epoch,
batch, rank); a resumed run draws what the uninterrupted run draws; DataLoader workers change
nothing. Before, every augmenter drew from torch's global RNG, which torchrun seeds alike on every
rank: both ranks shifted / masked their (different) batches with the same pattern."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from attnlab.data.shards import ShardStream
from attnlab.data.vision import RandomShift
from attnlab.models import create_model
from attnlab.training import ClassificationObjective, TrainConfig, Trainer
from attnlab.training.batch_draws import augment_batch, batch_seed
from tests.training.test_trainer import _Interrupt, _interrupt_at


class _Recorder:
    """A batch_augment that shifts the inputs (`RandomShift`, with the generator it is handed) and
    keeps what came out; all inputs are the same ramp image, so the outputs differ only by the draws."""

    def __init__(self, then=None):
        self.shift, self.seen, self.then = RandomShift(2), [], then

    def __call__(self, batch, generator=None):
        x = self.shift(batch[0], generator=generator)
        self.seen.append(x.clone())
        batch = (x, *batch[1:])
        return self.then(batch) if self.then is not None else batch


def _data(n=32):
    ramp = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) / 64
    return TensorDataset(ramp.expand(n, 1, 8, 8).clone(), torch.arange(n) % 3)


def _model():
    torch.manual_seed(0)
    return create_model("vit-tiny", num_classes=3, image_size=(8, 8), in_channels=1, dim=16, depth=1, num_heads=2)


def _config(**kw):
    return TrainConfig(**{**dict(epochs=2, batch_size=4, progress=False, device="cpu", seed=7), **kw})


def test_batch_seed_depends_on_every_word():
    seeds = {batch_seed(7, e, b, r) for e in range(3) for b in range(3) for r in range(3)}
    assert len(seeds) == 27
    assert batch_seed(7, 1, 2, 0) == batch_seed(7, 1, 2, 0)


def test_augment_batch_draws_by_rank_and_leaves_the_global_rng_alone():
    x = _data(8).tensors[0]
    shift = RandomShift(2)
    state = torch.get_rng_state()
    a0, a1, again = (augment_batch(lambda b, generator=None: shift(b, generator=generator), x, seed=7, epoch=0,
                                   index=3, rank=r, device=x.device) for r in (0, 1, 0))
    assert not torch.equal(a0, a1) and torch.equal(a0, again)
    assert torch.equal(torch.get_rng_state(), state)
    # a callable without a generator parameter draws from the global RNG, seeded the same way
    g0, g1 = (augment_batch(shift, x, seed=7, epoch=0, index=3, rank=r, device=x.device) for r in (0, 1))
    assert torch.equal(g0, a0) and torch.equal(g1, a1)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_resumed_run_draws_what_the_uninterrupted_run_draws(tmp_path):
    """Mid-epoch checkpoint at step 6 (4 batches an epoch): the resumed run draws the patterns of
    batches 7 and 8; and the global RNG's state changes none of them."""
    straight = _Recorder()
    Trainer(_model(), ClassificationObjective(3), _data(16), None, _config(), batch_augment=straight).fit()
    other = _Recorder()
    trainer = Trainer(_model(), ClassificationObjective(3), _data(16), None, _config(), batch_augment=other)
    torch.manual_seed(5)  # the global RNG is not where the draws come from
    trainer.fit()
    assert len(straight.seen) == 8 and all(torch.equal(a, b) for a, b in zip(other.seen, straight.seen))
    assert not torch.equal(straight.seen[0], straight.seen[4])  # another epoch, other draws

    first = Trainer(_model(), ClassificationObjective(3), _data(16), None, _config(checkpoint_every=3),
                    run_dir=tmp_path / "b", batch_augment=_Recorder(then=_interrupt_at(8)))
    with pytest.raises(_Interrupt):
        first.fit()
    resumed_draws = _Recorder()
    resumed = Trainer(_model(), ClassificationObjective(3), _data(16), None, _config(checkpoint_every=3),
                      run_dir=tmp_path / "b", batch_augment=resumed_draws)
    torch.manual_seed(999)
    resumed.resume()
    assert (resumed.state.epoch, resumed.state.batch_in_epoch) == (1, 2)
    resumed.fit()
    assert len(resumed_draws.seen) == 2
    assert all(torch.equal(a, b) for a, b in zip(resumed_draws.seen, straight.seen[6:]))


def test_a_stream_with_a_worker_resumed_draws_what_the_uninterrupted_run_draws(tmp_path):
    """A stream's DataLoader drew its workers' base seed from the global RNG when its iterator started:
    once in an uninterrupted run (persistent workers), once more in a run resumed at epoch 2, so the
    resumed run's augmentation (from the global RNG) drew other patterns."""
    from tests.training.test_stream_training import _decode, _shards

    shards = _shards(tmp_path)  # 60 samples: 7 batches of 8 an epoch

    def trainer(run, record, callbacks=()):
        stream = ShardStream(shards, _decode, shuffle=True, buffer=10, seed=5)
        return Trainer(_model(), ClassificationObjective(3), stream, None, _config(batch_size=8, num_workers=1),
                       run_dir=run and tmp_path / run, batch_augment=record, callbacks=list(callbacks))

    def stop_after_first(trainer, epoch, record):
        if epoch == 1:
            trainer.save()
            raise _Interrupt

    straight = _Recorder()
    trainer(None, straight).fit()
    with pytest.raises(_Interrupt):
        trainer("b", _Recorder(), [stop_after_first]).fit()
    again = _Recorder()
    resumed = trainer("b", again)
    resumed.resume()
    resumed.fit()
    assert len(straight.seen) == 14 and len(again.seen) == 7
    assert all(torch.equal(a, b) for a, b in zip(again.seen, straight.seen[7:]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from attnlab.training import cleanup_distributed, init_distributed

    info = init_distributed()
    record = _Recorder()
    Trainer(_model(), ClassificationObjective(3), _data(), None, _config(), dist=info, batch_augment=record).fit()
    np.save(os.path.join(out_dir, f"rank{rank}.npy"), torch.stack(record.seen).numpy())
    cleanup_distributed()


@pytest.mark.slow
def test_two_ranks_draw_their_own_patterns(tmp_path):
    """2 ranks, 4 batches each per epoch, 2 epochs: rank 1's shifts are not rank 0's at any batch, and
    rank 0's are those of a one-process run of rank 0 (the draws are a function of seed, epoch, batch, rank)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.from_numpy(np.load(tmp_path / f"rank{r}.npy")) for r in (0, 1))
    assert rank0.shape == rank1.shape == (8, 4, 1, 8, 8)
    assert all(not torch.equal(a, b) for a, b in zip(rank0, rank1))
    ramp = _data(4).tensors[0]
    shift = RandomShift(2)
    for index, got in enumerate(rank0):
        want = augment_batch(lambda b, generator=None: shift(b, generator=generator), ramp, seed=7,
                             epoch=index // 4, index=index % 4, rank=0, device=ramp.device)
        assert torch.equal(got, want)


def test_a_stream_with_a_worker_resumed_trains_the_uninterrupted_run_s_weights_with_dropout(tmp_path):
    """Dropout draws from the trainer's global RNG; a stream's DataLoader drew its workers' base seed
    from it too, once in an uninterrupted run (persistent workers) and once more in a run resumed at
    epoch 2, so the resumed run's dropout masks (and weights) differed. The loader has its own generator."""
    from tests.training.test_stream_training import _decode, _shards

    shards = _shards(tmp_path)

    def model():
        torch.manual_seed(0)
        return create_model("vit-tiny", num_classes=3, image_size=(8, 8), in_channels=1, dim=16, depth=1, num_heads=2,
                            dropout=0.3)

    def trainer(run, callbacks=()):
        torch.manual_seed(11)  # what run.py does before training; the checkpoint restores it on resume
        stream = ShardStream(shards, _decode, shuffle=True, buffer=10, seed=5)
        return Trainer(model(), ClassificationObjective(3), stream, None, _config(batch_size=8, num_workers=1),
                       run_dir=run and tmp_path / run, callbacks=list(callbacks))

    def stop_after_first(trainer, epoch, record):
        if epoch == 1:
            trainer.save()
            raise _Interrupt

    straight = trainer(None)
    straight.fit()
    with pytest.raises(_Interrupt):
        trainer("b", [stop_after_first]).fit()
    resumed = trainer("b")
    resumed.resume()
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
