"""Strict JSON for what attnlab writes: a float that is not finite becomes ``null``.

Python's ``json`` writes NaN and infinities as the bare words ``NaN`` / ``Infinity``, which
RFC 8259 does not allow: ``jq``, JavaScript's ``JSON.parse`` and most other readers reject
the whole file. A metric that is undefined for a run (e.g. ``mse_drop_last`` when the test
split holds fewer windows than the papers' batch) is written as ``null`` instead, as
pandas' ``to_json`` does.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["finite_or_none", "dumps"]


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (at any depth of dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``finite_or_none(obj)``; never writes NaN or Infinity."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)
