"""Models, found by name in one registry: ``create_model(name, **overrides)``."""

from attnlab.models import hybrid, vit  # noqa: F401  (registers the models)
from attnlab.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
