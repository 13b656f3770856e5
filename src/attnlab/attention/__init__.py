"""Pure attention functions: the kernel, masks and positional schemes (no nn.Module state)."""

from attnlab.attention import masks, positional
from attnlab.attention.functional import BACKENDS, attention, attention_weights

__all__ = ["attention", "attention_weights", "BACKENDS", "masks", "positional"]
