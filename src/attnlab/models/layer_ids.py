"""Layer ids of a stack of blocks, for layer-wise lr decay and ``--train.freeze`` by layer.

`attnlab.training.param_groups` does not know a model's layout: a model declares it with
``num_layers`` and ``layer_id(parameter_name)``, 0 for the embeddings (what comes before the
blocks), ``i + 1`` for block ``i``, ``num_layers + 1`` for what follows the last block (final
norm, head). This is the grouping of BEiT's layer decay (Bao et al. 2022) and timm's
``group_matcher``: position table, class token and patch embedding go with the embeddings.
"""

from __future__ import annotations

__all__ = ["layer_id_by_prefix"]


def layer_id_by_prefix(name: str, depth: int, *, after: tuple[str, ...], blocks: str = "blocks.") -> int:
    """The layer id of parameter ``name``: block ``i`` is named ``{blocks}{i}.``; a name starting
    with one of ``after`` follows the blocks; anything else is part of the embeddings."""
    if name.startswith(blocks):
        return int(name[len(blocks):].split(".", 1)[0]) + 1
    return depth + 1 if name.startswith(after) else 0
