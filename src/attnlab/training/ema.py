"""Exponential moving average of a model's weights (Polyak averaging; timm's ``ModelEmaV3``).

After every optimizer step ``ema = d * ema + (1 - d) * weights`` for each floating-point
entry of the state dict (parameters and buffers such as BatchNorm statistics); integer
buffers are copied. ``d`` warms up as ``min(decay, (1 + step) / (10 + step))`` so the early,
random weights fade quickly. The trainer evaluates, keeps and saves the averaged weights.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from attnlab.errors import AttnlabError

__all__ = ["WeightEma"]


class WeightEma:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"WeightEma: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the current weights in; ``step`` counts optimizer steps taken so far (from 0)."""
        d = self.decay_at(step)
        floats, targets = [], []
        for name, value in model.state_dict().items():
            avg = self.shadow[name]
            if avg.is_floating_point():
                floats.append(value.detach().to(avg.dtype))
                targets.append(avg)
            else:
                avg.copy_(value)
        if targets:
            torch._foreach_lerp_(targets, floats, 1.0 - d)  # avg += (1 - d) * (value - avg)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Run the block with the averaged weights loaded, then put the trained ones back."""
        trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(trained)

    def state_tensors(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu() for k, v in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        missing = set(self.shadow) - set(tensors)
        if missing:
            raise AttnlabError(
                f"the checkpoint holds no averaged weights (e.g. {sorted(missing)[0]!r}): it was written without "
                f"--train.ema_decay; resume with the run's own setting"
            )
        for k, v in tensors.items():
            if k in self.shadow:
                self.shadow[k].copy_(v)
