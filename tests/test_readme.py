"""Doc test: the README's Python quick-start runs as written and trains something."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_quickstart_runs() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python block"
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    metrics = namespace["metrics"]
    assert set(metrics) >= {"accuracy", "loss"}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert namespace["summary"]["best_epoch"] >= 1
    # The label is the sign of the series mean: even 3 epochs of a tiny model learn most of it.
    assert metrics["accuracy"] >= 0.6
