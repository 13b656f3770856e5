"""Doc test: docs/adding-a-task.md's example task family works through the run, unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "adding-a-task.md"


def test_the_guide_adds_a_task(monkeypatch, tmp_path):
    from attnlab.tasks import TASKS

    monkeypatch.setattr("tempfile.mkdtemp", lambda: str(tmp_path))
    monkeypatch.setattr("attnlab.tasks.TASKS", dict(TASKS))  # the guide's table update stays in this test
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 4
    namespace: dict = {"__name__": "guide"}
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)
    metrics = namespace["metrics"]
    assert metrics["task"] == "sines" and (tmp_path / "sines-run" / "model.safetensors").is_file()
    # three cycle counts are easy to tell apart: far above the 1/3 of chance after 5 short epochs
    assert metrics["test"]["accuracy"] >= 0.8
    with pytest.raises(Exception, match="--data.length must be >= 8"):
        namespace["load_sines"](None, seed=0, length=4)
