"""Checkpoints as safetensors + JSON, written atomically; loading never unpickles.

A checkpoint is a directory: ``model.safetensors`` (weights), ``optimizer.safetensors``
(optimizer tensors), ``state.json`` (step, epoch, scalars, optimizer structure). It is
written to ``<name>.tmp`` and swapped in with renames, so a kill at any moment leaves
either the old or the new checkpoint whole on disk, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from attnlab import jsonsafe
from attnlab.checkpoint_tensors import check_fits, read_tensors
from attnlab.errors import CheckpointError, ConfigError

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "save_weights",
    "load_weights",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_exists",
    "rng_state_tensors",
    "restore_rng_states",
    "check_mid_epoch_position",
]


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file beside it, synced and renamed into place: a
    reader sees the old file or the new one, never half of it; the temporary goes on any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _state_tensors(model: nn.Module) -> dict[str, Tensor]:
    # safetensors refuses shared storage; clone makes every tensor own its memory.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_state_tensors(model), tmp, metadata=metadata)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(model: nn.Module, path: str | Path, *, device: torch.device | str = "cpu") -> None:
    """Load weights strictly; a checkpoint of another model raises CheckpointError naming the keys."""
    path = Path(path)
    tensors = read_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch for {k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}")
        raise CheckpointError(f"{path} does not fit this model ({'; '.join(parts)})")
    for k in own:
        check_fits(path, k, tensors[k], own[k])
    model.load_state_dict({k: v.to(device) for k, v in tensors.items()})


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], structure: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in structure.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": structure["param_groups"]}


def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    extra_tensors: dict[str, Tensor] | None = None,
) -> None:
    """Write a checkpoint directory atomically (tmp dir + rename; old kept until the swap)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_state_tensors(model), str(tmp / "model.safetensors"))
    meta: dict[str, Any] = {"state": state}
    if optimizer is not None:
        tensors, structure = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta["optimizer"] = structure
    if extra_tensors:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in extra_tensors.items()}, str(tmp / "extra.safetensors"))
    (tmp / "state.json").write_text(jsonsafe.dumps(meta, indent=1))  # strict JSON: a NaN metric is null
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _resolve(directory: Path) -> Path:
    if (directory / "state.json").is_file():
        return directory
    old = directory.with_name(directory.name + ".old")
    if (old / "state.json").is_file():  # killed between the two renames
        return old
    raise CheckpointError(f"no checkpoint found at {directory}")


def checkpoint_exists(directory: str | Path) -> bool:
    try:
        _resolve(Path(directory))
        return True
    except CheckpointError:
        return False


def load_checkpoint(
    directory: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Restore model (and optimizer) in place; return (state, extra_tensors)."""
    directory = _resolve(Path(directory))
    try:
        meta = json.loads((directory / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"corrupt checkpoint state {directory / 'state.json'}: {exc}") from None
    device = next(model.parameters()).device
    load_weights(model, directory / "model.safetensors", device=device)
    if optimizer is not None and "optimizer" in meta:
        tensors = read_tensors(directory / "optimizer.safetensors")
        try:
            optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        except ValueError as exc:  # another grouping: --train.freeze / layer_decay / head_lr changed since
            raise CheckpointError(f"{directory}: the optimizer state does not fit this run's parameter groups ({exc}); "
                                  "resume with the --train.freeze / layer_decay / head_lr the run started with") from None
    extra = read_tensors(directory / "extra.safetensors") if (directory / "extra.safetensors").is_file() else {}
    return meta["state"], extra


def rng_state_tensors(device: torch.device) -> dict[str, Tensor]:
    """The random-number states a resumed run needs to draw what the uninterrupted run draws:
    the CPU generator (``torch_rng``) and, training on a GPU, that device's (``cuda_rng``: its
    dropout). Every process starts from the same seed and draws alike, so the main process's
    states are every process's."""
    states = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(extra: dict[str, Tensor], device: torch.device) -> None:
    """Put back `rng_state_tensors`' states. A GPU state is restored on a GPU only: a run moved
    to another kind of device draws other numbers anyway."""
    torch.set_rng_state(extra["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in extra:
        torch.cuda.set_rng_state(extra["cuda_rng"], device)


def check_mid_epoch_position(directory: Path, state: dict[str, Any], *, world_size: int, batch_size: int) -> None:
    """Take the world and batch size a trainer state was saved at out of ``state`` and refuse a
    mid-epoch position (a count of each rank's batches) resumed at others: it would skip other
    examples. An epoch-end checkpoint resumes at any size; older checkpoints did not record them."""
    saved_size, saved_batch = state.pop("world_size", world_size), state.pop("batch_size", batch_size)
    if state["batch_in_epoch"] and saved_size != world_size:
        raise ConfigError(f"{directory} was saved mid-epoch by {saved_size} process(es); resume it with {saved_size} "
                          f"(not {world_size}), or from an epoch-end checkpoint, which resumes at any size")
    if state["batch_in_epoch"] and saved_batch != batch_size:
        raise ConfigError(f"{directory} was saved mid-epoch after {state['batch_in_epoch']} batches of {saved_batch}; "
                          f"resume it with --train.batch_size {saved_batch} (not {batch_size}), or from an "
                          "epoch-end checkpoint, which resumes at any batch size")
