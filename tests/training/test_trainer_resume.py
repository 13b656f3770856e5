"""Exact resume with DataLoader workers, for data whose items draw random numbers (SASRec's
negatives, detection's flips): 0 and 2 workers train the same weights, and a run interrupted at
an epoch end or mid-epoch then resumed ends where the uninterrupted run does, loss curve included."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from attnlab.models import create_model
from attnlab.training import TrainConfig, Trainer
from tests.training.test_trainer import _interrupt_at, _Interrupt


def _sasrec():
    from attnlab.data.sasrec import SasrecTrainDataset
    from attnlab.tasks.sasrec import SasrecObjective

    rng = np.random.default_rng(0)
    train = [rng.choice(np.arange(1, 61), size=int(rng.integers(4, 12)), replace=False) for _ in range(40)]
    torch.manual_seed(0)
    model = create_model("sasrec", num_items=60, max_len=8, dim=16, depth=1, num_heads=2, dropout=0.2, attn_dropout=0.2)
    return model, SasrecObjective(), SasrecTrainDataset(train, 60, 8), 8  # 40 users: 5 batches of 8


def _detection():
    from attnlab.data.detection import load_shapes_task
    from attnlab.tasks.detection import DetectionObjective

    data = load_shapes_task(seed=1, train_size=20, val_size=1, test_size=1, image_size=16, max_objects=2, hflip=True)
    torch.manual_seed(0)
    model = create_model("detr-tiny", image_size=(16, 16), num_classes=data.num_classes, num_queries=4,
                         backbone_channels=(4, 8), dim=16, num_heads=2, encoder_depth=1, decoder_depth=1, dropout=0.1)
    return model, DetectionObjective(data.num_classes), data.train, 4  # 20 images: 5 batches of 4


FAMILIES = {"sasrec": _sasrec, "detection": _detection}


def _trainer(family, run_dir, *, workers, checkpoint_every=0, batch_augment=None, accumulate=1):
    model, objective, train, batch_size = FAMILIES[family]()
    config = TrainConfig(epochs=2, batch_size=batch_size, lr=3e-3, warmup_epochs=0.5, progress=False, device="cpu",
                         num_workers=workers, checkpoint_every=checkpoint_every, accumulate=accumulate)
    return Trainer(model, objective, train, None, config, run_dir=run_dir, batch_augment=batch_augment)


def _curve(trainer: Trainer) -> list[float]:
    return [record["train_loss"] for record in trainer.state.history]


def _assert_same_weights(a: Trainer, b: Trainer) -> None:
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("checkpoint_every", [0, 2])
def test_workers_and_resume_draw_the_same_items(tmp_path, family, checkpoint_every):
    """Before: each DataLoader worker drew negatives / flips from its own RNG, seeded per worker and not
    checkpointed, so 2 workers trained other weights than 0 workers, and a resumed run (fresh workers) others again."""
    torch.manual_seed(123)
    alone = _trainer(family, tmp_path / "alone", workers=0, checkpoint_every=checkpoint_every)
    alone.fit()
    torch.manual_seed(123)
    straight = _trainer(family, tmp_path / "straight", workers=2, checkpoint_every=checkpoint_every)
    straight.fit()
    _assert_same_weights(alone, straight)
    assert _curve(alone) == _curve(straight)

    torch.manual_seed(123)
    # Epoch 2, batch 4 (5 batches per epoch): the last checkpoint is mid-epoch at step 8 with checkpoint_every 2.
    first = _trainer(family, tmp_path / "resumed", workers=2, checkpoint_every=checkpoint_every,
                     batch_augment=_interrupt_at(9))
    with pytest.raises(_Interrupt):
        first.fit()
    resumed = _trainer(family, tmp_path / "resumed", workers=2, checkpoint_every=checkpoint_every)
    torch.manual_seed(999)  # a fresh process has another RNG state: resume restores the run's
    resumed.resume()
    assert (resumed.state.epoch, resumed.state.batch_in_epoch) == ((1, 0) if checkpoint_every == 0 else (1, 3))
    resumed.fit()
    _assert_same_weights(straight, resumed)
    assert _curve(resumed) == _curve(straight), "the resumed epoch's train_loss is over all its batches"
    logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["train_loss"]) for r in logged] == list(enumerate(_curve(straight), start=1))


def test_mid_epoch_resume_with_accumulation_and_a_partial_group(tmp_path):
    """5 batches per epoch with accumulate=2 are groups of 2, 2 and 1 (3 steps); a checkpoint every 2 steps falls
    mid-epoch 2 after its first group, and the resumed run steps on the same groups, partial one included."""
    torch.manual_seed(123)
    straight = _trainer("sasrec", tmp_path / "straight", workers=2, checkpoint_every=2, accumulate=2)
    straight.fit()
    assert straight.state.step == 6
    torch.manual_seed(123)
    first = _trainer("sasrec", tmp_path / "resumed", workers=2, checkpoint_every=2, accumulate=2,
                     batch_augment=_interrupt_at(9))
    with pytest.raises(_Interrupt):
        first.fit()
    resumed = _trainer("sasrec", tmp_path / "resumed", workers=2, checkpoint_every=2, accumulate=2)
    torch.manual_seed(999)
    resumed.resume()
    assert (resumed.state.epoch, resumed.state.batch_in_epoch, resumed.state.step) == (1, 2, 4)
    resumed.fit()
    _assert_same_weights(straight, resumed)
    assert _curve(resumed) == _curve(straight) and resumed.state.step == 6


def _ddp_worker(rank: int, world: int, port: int, run_dir: str, mode: str) -> None:
    """One rank of a 2-process SASRec run: ``straight``, ``first`` (interrupted mid-epoch 2) or ``resume``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from attnlab.training import cleanup_distributed, init_distributed
    from attnlab.training.checkpoint import save_weights

    info = init_distributed()
    model, objective, train, _ = _sasrec()
    config = TrainConfig(epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0.5, progress=False, device="cpu",
                         num_workers=2, checkpoint_every=2, accumulate=2)
    trainer = Trainer(model, objective, train, None, config, run_dir=run_dir, dist=info,
                      batch_augment=_interrupt_at(9) if mode == "first" else None)
    if mode == "resume":
        trainer.resume()
        assert (trainer.state.epoch, trainer.state.batch_in_epoch, trainer.state.step) == (1, 2, 4)
    try:
        trainer.fit()
    except _Interrupt:
        assert mode == "first"
    if rank == 0 and mode != "first":
        save_weights(trainer.model, os.path.join(run_dir, "final.safetensors"))
        with open(os.path.join(run_dir, "curve.json"), "w") as f:
            json.dump(_curve(trainer), f)
    cleanup_distributed()


@pytest.mark.slow
def test_ddp_mid_epoch_resume_with_workers_and_accumulation(tmp_path):
    """Two processes, 2 workers each, groups of 2, 2 and 1 micro-batches: resumed mid-epoch 2, the run ends with
    the uninterrupted run's weights and loss curve (the checkpoint's loss sums are every rank's)."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    for run, mode in (("straight", "straight"), ("resumed", "first"), ("resumed", "resume")):
        mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / run), mode), nprocs=2, join=True)
    straight, resumed = (load_file(tmp_path / run / "final.safetensors") for run in ("straight", "resumed"))
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    curves = [json.loads((tmp_path / run / "curve.json").read_text()) for run in ("straight", "resumed")]
    assert curves[0] == curves[1] and len(curves[0]) == 2
