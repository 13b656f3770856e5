"""One registry for every model (timm's pattern): ``@register_model("vit-tiny")``.

A registered function takes a validated config dataclass and returns an ``nn.Module``;
``create_model(name, **overrides)`` fills the config from the entry's defaults plus
overrides, and attaches ``model.config`` and ``model.model_name`` so a run can be saved
and rebuilt from ``config.yaml`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from attnlab.config import from_dict, to_dict
from attnlab.errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "model_entry", "ModelEntry"]


@dataclass
class ModelEntry:
    name: str
    build: Callable[[Any], nn.Module]
    config_cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # example_inputs(config) -> tuple of tensors the model's forward takes (used by tests/tools)
    example_inputs: Callable[[Any], tuple] | None = None
    # export_module(model) -> the module ONNX export traces, where the forward's output is not
    # what a consumer reads (SASRec: hidden states -> every item's score); None: the model itself
    export_module: Callable[[nn.Module], nn.Module] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    config: type,
    defaults: dict[str, Any] | None = None,
    description: str = "",
    example_inputs: Callable[[Any], tuple] | None = None,
    export_module: Callable[[nn.Module], nn.Module] | None = None,
):
    """Decorator: register ``fn(config) -> nn.Module`` under ``name``."""

    def wrap(fn: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, fn, config, dict(defaults or {}), doc, example_inputs, export_module)
        return fn

    return wrap


def _ensure_loaded() -> None:
    # Importing the model modules runs their @register_model decorators.
    import attnlab.models  # noqa: F401


def model_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_config(name: str, **overrides: Any) -> Any:
    entry = model_entry(name)
    return from_dict(entry.config_cls, {**entry.defaults, **overrides})


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` are config fields (unknown ones raise ConfigError)."""
    entry = model_entry(name)
    config = build_config(name, **overrides)
    model = entry.build(config)
    model.config = config
    model.model_name = name
    return model


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    return to_dict(model.config)


def list_models() -> list[str]:
    """Every registered model name; which tasks a model serves is the tasks' business
    (``attnlab.tasks.TaskSpec.models``)."""
    _ensure_loaded()
    return sorted(_REGISTRY)
