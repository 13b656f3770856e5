"""The package's shape: import-linter contracts (pyproject.toml), and no import side effects."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import attnlab

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_linter_contracts_hold():
    # In a subprocess: import-linter reconfigures logging, which would blind later caplog tests.
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))"
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_part_of_the_package_is_in_a_layer():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    parts = {f"attnlab.{info.name}" for info in pkgutil.iter_modules(attnlab.__path__)} - {"attnlab.__main__"}
    assert parts == named, f"not in a layer: {sorted(parts - named)}; gone: {sorted(named - parts)}"


def test_a_layer_violation_is_caught(tmp_path):
    """The contract really bites: a copy of the package where attention imports the run fails."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "attnlab", copy / "attnlab", ignore=shutil.ignore_patterns("__pycache__"))
    kernel = copy / "attnlab" / "attention" / "masks.py"
    kernel.write_text(kernel.read_text() + "\nfrom attnlab.run import load_run  # noqa\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename=sys.argv[2], no_cache=True))")
    result = subprocess.run([sys.executable, "-c", code, str(copy), str(tmp_path / "pyproject.toml")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "attnlab.attention.masks -> attnlab.run" in result.stdout


def test_tasks_load_without_import_order_side_effects():
    """Any task's loader works in a fresh interpreter that imported nothing else first, and the
    task table imports neither the run nor the CLI."""
    code = ("import sys; from attnlab.tasks import TASKS, load_task; "
            "assert 'attnlab.run' not in sys.modules and 'attnlab.cli' not in sys.modules, sorted(sys.modules); "
            "d = load_task('detection', None, seed=0, train_size=4, val_size=2, test_size=2, image_size=32); "
            "print(len(TASKS), len(d.train))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["11", "4"]
