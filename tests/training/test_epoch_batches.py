"""A training stream that yields fewer batches than it promised (``--data.skip_bad``: an unreadable
sample is left out, so a worker's last batch is no longer full and is dropped). Before: the epoch's
last accumulation group, cut short, never stepped (its gradient was thrown away), and under DDP a rank
that ran out left the others waiting in a gradient all-reduce it never entered. Now the last group
steps on the mean gradient of what it has, ranks agree when to end the epoch, and the shortfall is logged."""

from __future__ import annotations

import io
import logging
import os
import socket
import time

import numpy as np
import pytest
import torch
from torch import nn

from attnlab.data.shards import ShardStream, write_split
from attnlab.errors import DataError
from attnlab.training import TrainConfig, Trainer
from attnlab.training.epoch_batches import EpochBatches
from tests.training.test_trainer import _SquaredError, assert_accumulated_sgd


def _decode(sample, where):
    """float64 (x (3,), y ()) from ``.npy``; a sample without one is unreadable."""
    if "npy" not in sample:
        raise DataError(f"{where}: no .npy member")
    x = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
    return torch.from_numpy(x[:3]), torch.tensor(float(x[3]), dtype=torch.float64)


def _shards(tmp, n=40, bad=(), shard_size=10):
    """``n`` samples (x, y) in shards of ``shard_size``; the positions in ``bad`` hold no ``.npy``."""
    g = np.random.default_rng(0)
    rows = g.normal(size=(n, 4))

    def samples():
        for i in range(n):
            buf = io.BytesIO()
            np.save(buf, rows[i], allow_pickle=False)
            yield f"{i:06d}", ({"txt": b"corrupt"} if i in bad else {"npy": buf.getvalue()})

    return [(str(tmp / e["file"]), e["count"]) for e in write_split(tmp, "train", samples(), shard_size)]


def test_a_short_stream_steps_its_last_partial_group(tmp_path, caplog):
    """40 samples in batches of 5 promise 8 batches, groups of 3, 3 and 2 (3 steps); one unreadable
    sample leaves 7 batches, groups of 3, 3 and 1: the third steps on batch 7's gradient alone (it was
    dropped). Reference: SGD on float64 gradients worked out by hand, group by group."""
    stream = ShardStream(_shards(tmp_path, bad={17}), _decode, skip_bad=True)
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    w, b = model.weight.detach().clone()[0], model.bias.detach().clone()[0]
    seen = []

    def record(batch):
        seen.append([t.clone() for t in batch])
        return batch

    config = TrainConfig(epochs=1, batch_size=5, accumulate=3, grad_clip=0.0, progress=False, device="cpu")
    trainer = Trainer(model, _SquaredError(), stream, None, config, batch_augment=record)
    lr = 0.1
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
    with caplog.at_level(logging.WARNING):
        trainer.fit()
    assert trainer.steps_per_epoch == 3 and len(seen) == 7
    assert_accumulated_sgd(model, w, b, (seen[0:3], seen[3:6], seen[6:7]), lr)
    assert trainer.state.step == 3
    assert any("7 of the 8 batches" in r.getMessage() and "1 unreadable sample" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_epoch_batches_groups_and_scales():
    """Plain lists stand in for loaders: a full loader, one that runs short, and a rank stopped by another."""
    def groups(loader, planned, accumulate, agree=None):
        return [(m.index, m.group, m.last, m.scale)
                for m in EpochBatches(loader, planned=planned, accumulate=accumulate, lookahead=True, agree=agree)]

    assert groups(range(5), 5, 2) == [(0, 2, False, 1.0), (1, 2, True, 1.0), (2, 2, False, 1.0), (3, 2, True, 1.0),
                                      (4, 1, True, 1.0)]
    assert groups(range(4), 5, 3) == [(0, 3, False, 1.0), (1, 3, False, 1.0), (2, 3, True, 1.0), (3, 2, True, 2.0)]
    assert groups(range(2), 5, 3) == [(0, 3, False, 1.0), (1, 3, True, 1.5)]
    assert groups(range(9), 5, 3)[-1] == (4, 2, True, 1.0)  # more than promised: the plan ends the epoch
    calls = []

    def other_rank_has_two(has):  # this rank has 5; the other ran out after 2
        calls.append(has)
        return has and len(calls) <= 2

    epoch = EpochBatches(range(5), planned=5, accumulate=3, lookahead=True, agree=other_rank_has_two)
    assert [(m.index, m.last, m.scale) for m in epoch] == [(0, False, 1.0), (1, True, 1.5)]
    assert (epoch.yielded, epoch.left_out) == (2, 1) and len(calls) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, shard_dir: str, accumulate: int) -> None:
    import datetime

    import torch.distributed as dist
    from attnlab.training import cleanup_distributed, init_distributed
    from attnlab.training.checkpoint import save_weights

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # a hang ends, in the worst case
    info = init_distributed()
    from pathlib import Path

    shards = sorted(Path(shard_dir).glob("train-*.tar"))
    stream = ShardStream([(str(p), 10) for p in shards], _decode, skip_bad=True)
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    config = TrainConfig(epochs=2, batch_size=5, accumulate=accumulate, progress=False, device="cpu")
    trainer = Trainer(model, _SquaredError(), stream, None, config, dist=info)
    trainer.fit()
    save_weights(trainer.model, os.path.join(shard_dir, f"rank{rank}.safetensors"))
    with open(os.path.join(shard_dir, f"rank{rank}.steps"), "w") as f:
        f.write(str(trainer.state.step))
    cleanup_distributed()


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 3])
def test_ranks_with_uneven_batch_counts_do_not_hang(tmp_path, accumulate):
    """40 samples, 2 ranks, batches of 5: 4 batches a rank; one unreadable sample in rank 0's range leaves it
    3. Both ranks stop after 3 batches each epoch (rank 1's 4th is left out), step alike (3 steps an epoch with
    accumulate 1; groups of 3 then none with 3, so 1) and end with the same weights, well within the timeout."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    _shards(tmp_path, bad={7})
    context = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path), accumulate), nprocs=2,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    try:
        while not context.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail("the two ranks hung (one waits in a collective the other never enters)")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    steps = [int((tmp_path / f"rank{r}.steps").read_text()) for r in (0, 1)]
    assert steps == [6, 6] if accumulate == 1 else steps == [2, 2]
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    for key, value in rank0.items():
        torch.testing.assert_close(rank1[key], value, rtol=0, atol=0, msg=key)
