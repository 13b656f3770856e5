"""``--model.depth 4 --train.lr 1e-3``: the dotted flags of ``attnlab train`` and ``attnlab shard``, as
nested RunConfig sections (kept apart from the command table in ``attnlab.cli``)."""

from __future__ import annotations

from typing import Any

from attnlab.errors import ConfigError

__all__ = ["SECTIONS", "parse_dotted"]


SECTIONS = {"model": "model_config", "data": "data_options", "train": "train", "objective": "objective",
            "eval": "evaluation", "evaluation": "evaluation"}


def parse_dotted(extra: list[str]) -> dict[str, Any]:
    """``--model.depth 4 --train.lr 1e-3`` -> nested dict of RunConfig sections.

    ``--model.*`` fills model_config, ``--data.*`` data_options, ``--eval.*`` evaluation,
    ``--train.*`` and ``--objective.*`` their own sections.
    """
    from attnlab.config import apply_dotted, parse_value

    tree: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--") or "." not in flag:
            raise ConfigError(f"unrecognised argument {flag!r} (dotted overrides look like --train.lr 1e-3)")
        key = flag[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise ConfigError(f"{flag} needs a value")
            text = extra[i + 1]
            i += 2
        section, _, rest = key.partition(".")
        section = SECTIONS.get(section, section)
        if section not in SECTIONS.values():
            raise ConfigError(f"unknown section in {flag!r}: use --model.<field>, --train.<field>, --data.<option>, "
                              "--objective.<option> or --eval.<option>")
        apply_dotted(tree, f"{section}.{rest}", parse_value(text))
    return tree
