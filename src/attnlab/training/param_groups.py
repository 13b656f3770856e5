"""Optimizer parameter groups for fine-tuning: frozen parameters, layer-wise lr decay, a head lr.

Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; Bao et al. 2022, BEiT): with a
model of ``num_layers`` blocks, the head gets ``lr``, block ``i`` (0-based) gets
``lr * decay ** (num_layers - i)`` and the embeddings ``lr * decay ** (num_layers + 1)``, so
the layers nearest the input, which hold the most general features, move least. The trainer
does not know the model's layout: a model declares it with ``num_layers`` and
``layer_id(parameter_name)`` (0 = embeddings, ``i + 1`` = block ``i``, ``num_layers + 1`` =
the head and what follows the last block).

Freeze patterns (``--train.freeze embeddings,blocks.0-3``), comma-separated, each one of:

- ``embeddings``: layer id 0; ``head``: layer id ``num_layers + 1``;
- ``blocks.I`` or ``blocks.I-J`` (0-based, J included): the blocks' layer ids;
- anything else: a glob over parameter names (``fnmatch``; ``encoder.blocks.0.*``), where a
  name without wildcards also matches every parameter under it (``pooler`` -> ``pooler.weight``).

The first three need a model that declares layer ids. A pattern that matches nothing is an
error, so a typo never trains what it meant to freeze. Frozen parameters get
``requires_grad = False`` and stay out of the optimizer.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from torch import nn

from attnlab.errors import ConfigError

__all__ = ["parse_freeze", "frozen_names", "apply_freeze", "parameter_groups", "no_weight_decay_names"]

_BLOCKS = re.compile(r"^blocks\.(\d+)(?:-(\d+))?$")


def parse_freeze(text: str) -> list[str]:
    """``"embeddings, blocks.0-3"`` -> ``["embeddings", "blocks.0-3"]`` (empty items dropped)."""
    return [p.strip() for p in str(text or "").split(",") if p.strip()]


def _layer_ids(model: nn.Module, why: str) -> tuple[int, dict[str, int]]:
    layer_id = getattr(model, "layer_id", None)
    num_layers = getattr(model, "num_layers", None)
    if not callable(layer_id) or not isinstance(num_layers, int):
        raise ConfigError(f"{why} needs a model that declares its layers (num_layers, layer_id); "
                          f"{type(model).__name__} does not")
    return num_layers, {name: int(layer_id(name)) for name, _ in model.named_parameters()}


def frozen_names(model: nn.Module, patterns: list[str]) -> set[str]:
    """Names of the parameters the freeze patterns select (see the module docstring)."""
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        found: set[str]
        match = _BLOCKS.match(pattern)
        if pattern in ("embeddings", "head") or match:
            num_layers, ids = _layer_ids(model, f"--train.freeze {pattern}")
            if pattern == "embeddings":
                wanted = {0}
            elif pattern == "head":
                wanted = {num_layers + 1}
            else:
                first, last = int(match.group(1)), int(match.group(2) or match.group(1))
                if first > last:
                    raise ConfigError(f"--train.freeze {pattern}: the range is reversed (write blocks.{last}-{first})")
                if last >= num_layers:
                    raise ConfigError(f"--train.freeze {pattern}: blocks are numbered 0..{num_layers - 1}")
                wanted = set(range(first + 1, last + 2))
            found = {n for n in names if ids[n] in wanted}
        else:
            found = {n for n in names if fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".")}
        if not found:
            raise ConfigError(f"--train.freeze {pattern!r} matches no parameter (names look like {names[0]!r})")
        chosen |= found
    return chosen


def apply_freeze(model: nn.Module, patterns: list[str]) -> set[str]:
    """Set ``requires_grad = False`` on the selected parameters; returns their names."""
    names = frozen_names(model, patterns) if patterns else set()
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
    return names


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that modules exempt from weight decay.

    A module declares its own exemptions with a ``no_weight_decay()`` method returning names
    relative to itself (timm's convention: class tokens, position tables, embeddings); biases
    and norm weights (1-d parameters) are exempt anyway. Decaying them pulls embeddings
    toward zero for no regularisation benefit (Loshchilov & Hutter 2019 decouple the decay;
    which tensors to spare follows BERT and ViT practice).
    """
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declare = getattr(module, "no_weight_decay", None)
        if callable(declare):
            names |= {f"{prefix}.{n}" if prefix else n for n in declare()}
    return names


def parameter_groups(model: nn.Module, *, lr: float, weight_decay: float, no_decay_names: set[str] | None = None,
                     layer_decay: float = 1.0, head_lr: float | None = None) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: one per (learning rate, decayed or not).

    Biases, norm weights (1-d) and ``no_decay_names`` (default: the model's own,
    `no_weight_decay_names`) get no weight decay. ``layer_decay < 1``
    and ``head_lr`` need the model's layer ids; without either, two groups as before.
    """
    if no_decay_names is None:
        no_decay_names = no_weight_decay_names(model)
    scaled = layer_decay != 1.0 or head_lr is not None
    num_layers, ids = _layer_ids(model, "--train.layer_decay / --train.head_lr") if scaled else (0, {})
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    if not scaled:  # the two groups, in the order checkpoints written before layer decay expect
        for decay in (True, False):
            groups[(lr, decay)] = {"params": [], "lr": lr, "weight_decay": weight_decay if decay else 0.0}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group_lr = lr
        if scaled:
            layer = ids[name]
            group_lr = lr * layer_decay ** (num_layers + 1 - layer)
            if layer == num_layers + 1 and head_lr is not None:
                group_lr = head_lr
        decay = not (p.dim() < 2 or name in no_decay_names)
        group = groups.setdefault((group_lr, decay), {"params": [], "lr": group_lr,
                                                      "weight_decay": weight_decay if decay else 0.0})
        group["params"].append(p)
    if not any(g["params"] for g in groups.values()):
        raise ConfigError("every parameter is frozen: nothing to train (check --train.freeze)")
    return list(groups.values())
