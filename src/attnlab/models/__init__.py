"""Models, found by name in one registry: ``create_model(name, **overrides)``.

The model families below register their models with ``@register_model`` when imported; the
import list is explicit (a new family adds its module here), not a scan of the folder.
"""

from attnlab.models import audio, detr, dlinear, hybrid, lm, patchtst, sasrec, seq2seq, text, timeseries, vit  # noqa: F401  (registers)
from attnlab.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
