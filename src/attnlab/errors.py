"""Error types that carry a clear, user-facing message.

The CLI turns any `AttnlabError` into one line on stderr and exit code 2. Each subclass
also derives from the builtin a Python user would catch (`ValueError`, `FileNotFoundError`).
"""

from __future__ import annotations

__all__ = ["AttnlabError", "ConfigError", "DataError", "CheckpointError"]


class AttnlabError(Exception):
    """Base class of every error attnlab raises on purpose."""


class ConfigError(AttnlabError, ValueError):
    """A configuration value, key or file is wrong."""


class DataError(AttnlabError, ValueError):
    """A data path, file or record is missing or malformed; the message names it."""


class CheckpointError(AttnlabError, ValueError):
    """A run directory or checkpoint is missing, corrupt, or belongs to another model."""
