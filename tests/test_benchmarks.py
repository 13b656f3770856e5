"""Every benchmark script's ``--quick`` mode runs end to end and writes its JSON.

These are smoke tests of the plumbing (the full runs take minutes to hours and are not
tests); each script must exit 0, print a table and write a JSON object to ``--out``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]

# (script, extra arguments, data the script reads from shared/data)
QUICK = [
    ("attention.py", ["--memory", "off"], None),
    ("attention_targets.py", ["--passes", "bwd", "--dtypes", "fp32"], None),
    ("explain.py", [], None),
    ("timeseries.py", ["--datasets", "ItalyPowerDemand", "--root", str(DATA_DIR / "ucr")], DATA_DIR / "ucr" / "ItalyPowerDemand"),
    ("audio.py", ["--data", str(DATA_DIR / "fsdd" / "recordings"), "--threads", "1"], DATA_DIR / "fsdd" / "recordings"),
    ("sasrec.py", ["--data", str(DATA_DIR / "sasrec" / "games.txt"), "--threads", "1"], DATA_DIR / "sasrec" / "games.txt"),
    ("detection.py", ["--threads", "1"], None),
    ("models.py", ["--threads", "1"], None),
    ("dropout.py", ["--threads", "1"], None),
    ("linear.py", ["--threads", "1"], None),
    ("text_classification.py", ["--root", str(DATA_DIR / "text"), "--threads", "1"], DATA_DIR / "text"),
    ("translation.py", ["--data", str(DATA_DIR / "multi30k"), "--threads", "1"], DATA_DIR / "multi30k"),
    ("language_model.py", ["--data", str(DATA_DIR / "tinyshakespeare" / "input.txt"), "--threads", "1"],
     DATA_DIR / "tinyshakespeare" / "input.txt"),
]


@pytest.mark.slow
@pytest.mark.parametrize("script,extra,needs", QUICK, ids=[q[0] for q in QUICK])
def test_quick_benchmark_runs_and_writes_json(script, extra, needs, tmp_path):
    if needs is not None and not needs.exists():
        pytest.skip(f"shared data not found: {needs}")
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert isinstance(result, dict) and result, f"{script} wrote an empty result"
    assert done.stdout.strip(), f"{script} printed no table"
