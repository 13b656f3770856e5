"""Trainer: learning happens, exact resume, gradient accumulation, DDP equals one process."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from torch.utils.data import TensorDataset

from attnlab.errors import ConfigError
from attnlab.models import create_model
from attnlab.training import ClassificationObjective, DistInfo, TrainConfig, Trainer
from attnlab.training.checkpoint import load_weights


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    x = x + (y.float() - 1.0)[:, None, None, None] * 1.5  # class-dependent brightness: easy to learn
    return TensorDataset(x, y)


def _model(dropout=0.0):
    torch.manual_seed(0)
    return create_model("vit-tiny", num_classes=3, dim=32, depth=2, num_heads=2, dropout=dropout)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _config(**kw):
    base = dict(epochs=3, batch_size=16, lr=3e-3, warmup_epochs=0.5, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_and_writes_checkpoints(tmp_path):
    train, val = _data(), _data(48, seed=1)
    trainer = Trainer(_model(), ClassificationObjective(3), train, val, _config(epochs=6), run_dir=tmp_path)
    before = trainer.evaluate(val)["accuracy"]
    trainer.fit()
    after = trainer.evaluate(val)["accuracy"]
    assert after >= 0.9 and after > before
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    assert (tmp_path / "model.safetensors").is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 6
    assert any(p.name.startswith("events") for p in (tmp_path / "tensorboard").iterdir())


class _Interrupt(Exception):
    pass


def _interrupt_at(call: int):
    """A batch_augment that raises `_Interrupt` at its ``call``-th batch (a run killed there)."""
    calls = {"n": 0}

    def boom(batch):
        calls["n"] += 1
        if calls["n"] == call:
            raise _Interrupt
        return batch

    return boom


@pytest.mark.parametrize("checkpoint_every", [0, 2])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, checkpoint_every):
    train, val = _data(), _data(32, seed=1)
    cfg = _config(checkpoint_every=checkpoint_every)
    straight = Trainer(_model(dropout=0.1), ClassificationObjective(3), train, val, cfg, run_dir=tmp_path / "a")
    torch.manual_seed(123)
    straight.fit()

    boom = _interrupt_at(9)  # epoch 2, batch 3 (6 batches per epoch)

    first = Trainer(_model(dropout=0.1), ClassificationObjective(3), train, val, cfg, run_dir=tmp_path / "b", batch_augment=boom)
    torch.manual_seed(123)
    with pytest.raises(_Interrupt):
        first.fit()
    resumed = Trainer(_model(dropout=0.1), ClassificationObjective(3), train, val, cfg, run_dir=tmp_path / "b")
    torch.manual_seed(999)  # a fresh process would have another RNG state: resume must restore it
    resumed.resume()
    expected_epoch, expected_batch = (1, 0) if checkpoint_every == 0 else (1, 8 - 6)
    assert (resumed.state.epoch, resumed.state.batch_in_epoch) == (expected_epoch, expected_batch)
    resumed.fit()
    for key, value in _weights(straight.model).items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_a_mid_epoch_checkpoint_of_another_world_size_is_refused(tmp_path):
    """A mid-epoch position is per rank; epoch-end checkpoints resume at any world size."""
    import json

    from attnlab.errors import ConfigError

    train = _data()
    cfg = _config(checkpoint_every=2)
    boom = _interrupt_at(9)  # epoch 2, batch 3: the last checkpoint is mid-epoch (step 8)

    first = Trainer(_model(), ClassificationObjective(3), train, None, cfg, run_dir=tmp_path, batch_augment=boom)
    with pytest.raises(_Interrupt):
        first.fit()
    state_file = tmp_path / "checkpoint" / "state.json"
    meta = json.loads(state_file.read_text())
    assert meta["state"]["world_size"] == 1 and meta["state"]["batch_in_epoch"] == 2
    meta["state"]["world_size"] = 2  # as if two processes had written it
    state_file.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="saved mid-epoch by 2 process"):
        Trainer(_model(), ClassificationObjective(3), train, None, cfg, run_dir=tmp_path).resume()
    meta["state"]["batch_in_epoch"] = 0  # at an epoch end the same world-size change is fine
    state_file.write_text(json.dumps(meta))
    Trainer(_model(), ClassificationObjective(3), train, None, cfg, run_dir=tmp_path).resume()


def test_a_mid_epoch_checkpoint_resumed_at_another_batch_size_is_refused(tmp_path):
    """The position is a count of batches: resumed at another --train.batch_size it skipped another number of
    examples (64 where 32 were seen), with only a learning-rate warning. Epoch-end checkpoints resume at any size."""
    from attnlab.errors import ConfigError

    train = _data()
    boom = _interrupt_at(9)  # epoch 2, batch 3: the last checkpoint is mid-epoch (step 8)

    first = Trainer(_model(), ClassificationObjective(3), train, None, _config(checkpoint_every=2), run_dir=tmp_path,
                    batch_augment=boom)
    with pytest.raises(_Interrupt):
        first.fit()
    batch = first.config.batch_size
    other = _config(checkpoint_every=2, batch_size=2 * batch)
    with pytest.raises(ConfigError, match=f"after 2 batches of {batch}; resume it with --train.batch_size {batch} "
                                          f"\\(not {2 * batch}\\)"):
        Trainer(_model(), ClassificationObjective(3), train, None, other, run_dir=tmp_path).resume()
    Trainer(_model(), ClassificationObjective(3), train, None, _config(checkpoint_every=2), run_dir=tmp_path).resume()


def test_rng_states_hold_the_gpu_generator_on_a_gpu(monkeypatch):
    """A GPU run's dropout draws from the device's generator, which checkpoints did not hold: resumed, it drew
    other masks. torch.cuda's state functions are stood in for, so this runs on a CPU-only machine."""
    from attnlab.training.checkpoint import restore_rng_states, rng_state_tensors

    device_state, calls = torch.arange(16, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: device_state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state.clone(), device)))
    cuda = torch.device("cuda", 0)
    saved = rng_state_tensors(cuda)
    assert set(saved) == {"torch_rng", "cuda_rng"} and torch.equal(saved["cuda_rng"], device_state)
    assert set(rng_state_tensors(torch.device("cpu"))) == {"torch_rng"}
    expected = torch.rand(3)  # the CPU generator comes back too
    torch.set_rng_state(saved["torch_rng"])
    torch.manual_seed(7)
    restore_rng_states(saved, cuda)
    assert len(calls) == 1 and torch.equal(calls[0][0], device_state) and calls[0][1] == cuda
    restore_rng_states(saved, torch.device("cpu"))  # a GPU run resumed on a CPU: the GPU state is not for it
    assert len(calls) == 1
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_gradient_accumulation_matches_large_batch():
    train = _data(64)
    big = Trainer(_model(), ClassificationObjective(3), train, None, _config(epochs=1, batch_size=32))
    small = Trainer(_model(), ClassificationObjective(3), train, None, _config(epochs=1, batch_size=16, accumulate=2))
    big.fit()
    small.fit()
    for key, value in _weights(big.model).items():
        torch.testing.assert_close(small.model.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_fused_optimizer_matches_the_per_tensor_loop():
    """The fused AdamW kernel is a speed route only: same weights as torch's per-tensor AdamW."""
    train = _data(64)
    fused = Trainer(_model(), ClassificationObjective(3), train, None, _config(epochs=2, fused_optimizer=True))
    loop = Trainer(_model(), ClassificationObjective(3), train, None, _config(epochs=2, fused_optimizer=False))
    assert fused.optimizer.defaults["fused"] and not loop.optimizer.defaults["fused"]
    torch.manual_seed(0)
    fused.fit()
    torch.manual_seed(0)
    loop.fit()
    moved = 0.0
    for key, value in _weights(loop.model).items():
        if key.endswith("k_proj.bias"):  # softmax ignores it: its gradient is rounding noise, which Adam scales up
            continue
        torch.testing.assert_close(fused.model.state_dict()[key], value, rtol=1e-4, atol=2e-6, msg=key)
        moved = max(moved, float((value - _weights(_model())[key]).abs().max()))
    assert moved > 1e-3  # the weights did train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from attnlab.training import cleanup_distributed, init_distributed
    from attnlab.training.checkpoint import save_weights

    info = init_distributed()
    trainer = Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=2, batch_size=8), dist=info,
                      run_dir=os.path.join(out_dir, "run"))
    trainer.fit()
    save_weights(trainer.model, os.path.join(out_dir, f"rank{rank}.safetensors"))
    cleanup_distributed()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = _model(), _model()
    load_weights(rank0, tmp_path / "rank0.safetensors")
    load_weights(rank1, tmp_path / "rank1.safetensors")
    for key, value in rank0.state_dict().items():
        torch.testing.assert_close(rank1.state_dict()[key], value, rtol=0, atol=0, msg=key)
    single = Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=2, batch_size=16), dist=DistInfo())
    single.fit()
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0.state_dict()[key], value, rtol=1e-4, atol=2e-5, msg=key)
    # only rank 0 wrote the run directory's files
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_weight_decay_exemptions_are_declared_by_modules():
    """``no_weight_decay()`` (timm's convention) names what AdamW leaves undecayed; 1-d
    parameters are exempt anyway; everything else decays at the configured rate."""
    from torch import nn

    from attnlab.training.param_groups import no_weight_decay_names

    class Tagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.randn(4, 3))
            self.proj = nn.Linear(3, 2)

        def no_weight_decay(self):
            return {"table"}

        def forward(self, x):
            return self.proj(x)

    outer = nn.Sequential(Tagged(), nn.Linear(2, 2))
    assert no_weight_decay_names(outer) == {"0.table"}
    vit = create_model("vit-tiny", num_classes=3, image_size=(8, 8), in_channels=1)
    assert no_weight_decay_names(vit) == {"cls_token", "pos_embed"}
    lm = create_model("gpt-lm", vocab_size=20, pos_embed="learned")
    assert no_weight_decay_names(lm) == {"token_embed.weight", "pos_embed.weight"}

    data = TensorDataset(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    trainer = Trainer(vit, ClassificationObjective(3), data, None, TrainConfig(epochs=1, batch_size=4, weight_decay=0.3, progress=False))
    decay, no_decay = trainer.optimizer.param_groups
    names = {id(p): n for n, p in vit.named_parameters()}
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "pos_embed"} <= undecayed
    assert all(vit.get_parameter(n).dim() < 2 for n in undecayed - {"cls_token", "pos_embed"})
    assert all(p.dim() >= 2 for p in decay["params"]) and len(decay["params"]) > 0


def assert_accumulated_sgd(model, w, b, groups, lr: float) -> None:
    """``model`` (a float64 ``nn.Linear(D, 1)`` that started at ``w`` (D,), ``b`` ()) has the weights plain SGD
    at ``lr`` reaches on the mean squared error, stepping once per group of (x, y) micro-batches on the mean of
    their gradients, worked out by hand (2 / B X^T r): the reference for the accumulation tests."""
    for group in groups:
        grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
        for bx, by in group:
            r = bx @ w + b - by  # (B,)
            grad_w += 2 / len(bx) * bx.T @ r / len(group)
            grad_b += 2 / len(bx) * r.sum() / len(group)
        w, b = w - lr * grad_w, b - lr * grad_b
    torch.testing.assert_close(model.weight.detach()[0], w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.bias.detach()[0], b, rtol=1e-12, atol=1e-12)


class _SquaredError:
    """Mean squared error of a linear model's one output."""

    metric, greater_is_better = "loss", False

    def loss(self, model, batch):
        x, y = batch
        return ((model(x).squeeze(-1) - y) ** 2).mean(), len(x)


def test_accumulation_steps_on_an_epochs_last_partial_group():
    """7 micro-batches with accumulate=3 are groups of 3, 3 and 1. The last one took no step (its gradient was
    dropped); as in Hugging Face's Trainer it now steps on the mean gradient of the micro-batches it has, and the
    schedule counts it (ceil(7 / 3) = 3 steps per epoch). Reference: plain SGD on float64 gradients of the mean
    squared error, worked out by hand (2 / B X^T r), group by group over the batches the trainer saw."""
    from torch import nn

    torch.manual_seed(0)
    x, y = torch.randn(28, 3, dtype=torch.float64), torch.randn(28, dtype=torch.float64)
    model = nn.Linear(3, 1).double()
    w, b = model.weight.detach().clone()[0], model.bias.detach().clone()[0]  # (3,), ()
    seen = []

    def record(batch):
        seen.append([t.clone() for t in batch])
        return batch

    trainer = Trainer(model, _SquaredError(), TensorDataset(x, y), None,
                      _config(epochs=1, batch_size=4, accumulate=3, grad_clip=0.0), batch_augment=record)
    lr = 0.1
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
    trainer.fit()
    assert len(seen) == 7
    assert_accumulated_sgd(model, w, b, (seen[0:3], seen[3:6], seen[6:7]), lr)
    assert trainer.state.step == 3 and trainer.steps_per_epoch == 3 and trainer.total_steps == 3


def test_the_schedule_counts_the_partial_groups():
    """96 examples in batches of 16 are 6 batches: accumulate=4 steps twice an epoch (4 + 2), and the cosine ends
    at its floor after the last of those steps. Accumulating 7 (more than the epoch) steps once per epoch, on all
    6 batches, as accumulate=6 does (it was refused: no step would have been taken)."""
    cfg = _config(epochs=3, accumulate=4)
    trainer = Trainer(_model(), ClassificationObjective(3), _data(96), None, cfg)
    assert (trainer.steps_per_epoch, trainer.total_steps) == (2, 6)
    trainer.fit()
    assert trainer.state.step == 6
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(cfg.lr * cfg.min_lr_factor, rel=1e-9)
    six, seven = (Trainer(_model(), ClassificationObjective(3), _data(96), None, _config(accumulate=k, epochs=1))
                  for k in (6, 7))
    six.fit()
    seven.fit()
    assert seven.state.step == 1
    for key, value in _weights(six.model).items():
        torch.testing.assert_close(seven.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


class _ScriptedValidation(ClassificationObjective):
    """Validation losses read from a script, one per epoch (lower is better)."""

    metric, greater_is_better = "loss", False

    def __init__(self, losses):
        super().__init__(3)
        self.losses = list(losses)

    def evaluate(self, model, batches):
        return {"loss": self.losses.pop(0)}


def test_a_nan_validation_metric_is_never_the_best():
    """Every comparison with NaN is False: a NaN val_loss counted as better than 1.0, and 2.0 then as
    better than NaN, so the worst epoch's weights were kept."""
    trainer = Trainer(_model(), _ScriptedValidation([1.0, float("nan"), 2.0]), _data(), _data(48, seed=1),
                      _config(epochs=3))
    summary = trainer.fit()
    assert summary["best_epoch"] == 1 and summary["best_val"] == 1.0
    assert trainer.state.bad_epochs == 2


def test_a_run_that_stopped_early_stays_stopped_when_resumed(tmp_path):
    """Resumed, a run that early stopping had ended trained one more epoch than the uninterrupted run."""
    losses = [1.0, 2.0, 3.0, 0.5, 0.4]
    first = Trainer(_model(), _ScriptedValidation(losses), _data(), _data(48, seed=1),
                    _config(epochs=5, early_stopping_patience=2), run_dir=tmp_path)
    assert first.fit()["epochs_run"] == 3
    weights = _weights(first.model)
    resumed = Trainer(_model(), _ScriptedValidation(losses[3:]), _data(), _data(48, seed=1),
                      _config(epochs=5, early_stopping_patience=2), run_dir=tmp_path)
    resumed.resume()
    summary = resumed.fit()
    assert summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    for k, v in _weights(resumed.model).items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)


def test_resuming_with_a_longer_schedule_says_the_rate_jumps(tmp_path, caplog):
    """A 2-epoch cosine resumed with epochs=4 sets another rate at the resumed step: said, not silent."""
    Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=2), run_dir=tmp_path).fit()
    with caplog.at_level("WARNING", logger="attnlab.training.trainer"):
        Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=2), run_dir=tmp_path).resume()
    assert not [r for r in caplog.records if "learning-rate schedule" in r.getMessage()]
    with caplog.at_level("WARNING", logger="attnlab.training.trainer"):
        Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=4), run_dir=tmp_path).resume()
    said = [r.getMessage() for r in caplog.records if "learning-rate schedule" in r.getMessage()]
    assert len(said) == 1 and "at step 12" in said[0], said


def test_resuming_with_fewer_epochs_than_done_is_refused(tmp_path):
    """A 2-epoch checkpoint resumed with epochs=1 trained nothing and left its config claiming 1 epoch."""
    Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=2), run_dir=tmp_path).fit()
    with pytest.raises(ConfigError, match="has trained 2 epochs already; resume it with --epochs 2 or more \\(not 1\\)"):
        Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=1), run_dir=tmp_path).resume()
    Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=2), run_dir=tmp_path).resume()


def test_resume_honours_the_fused_optimizer_setting(tmp_path):
    """Loading the optimizer state restored the saved run's `fused` flag: --train.fused_optimizer was ignored."""
    Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=1), run_dir=tmp_path).fit()
    resumed = Trainer(_model(), ClassificationObjective(3), _data(), None, _config(epochs=2, fused_optimizer=False),
                      run_dir=tmp_path)
    resumed.resume()
    assert all(not group["fused"] for group in resumed.optimizer.param_groups)
    resumed.fit()
    assert resumed.state.step == 12
