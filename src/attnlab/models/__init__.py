"""Models, found by name in one registry: ``create_model(name, **overrides)``.

Every module in this package registers its models with ``@register_model`` on import.
"""

import importlib
import pkgutil

from attnlab.models.registry import create_model, list_models, model_entry, register_model

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
