"""SASRec runs at inference time (`attnlab.tasks.sasrec`): predict and explain read the run's
item-id map from its data.json, so they need no training file; an older run without the map
still reads it from the file; a predict input in training format is one line, not read as items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from attnlab.cli import main
from tests.conftest import train_tiny_sasrec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sasrec")
    return folder, train_tiny_sasrec(folder)


def _predict(capsys, run: Path, history: Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["predict", str(run), str(history), "--top-k", "3", "--json"])
    out, err = capsys.readouterr()
    return code, out, err.strip()


def test_predict_and_explain_need_no_training_file(tiny, tmp_path, capsys):
    """The run directory alone: predict and explain give what they gave beside the training file,
    after that file changed and after it is gone (they once refused both: "changed since
    training", "is gone")."""
    folder, trained = tiny
    history = tmp_path / "history.txt"
    history.write_text("10 11 12\n13\n")  # user 3's first items (items 10..17), oldest first
    code, before, err = _predict(capsys, trained, history)
    assert code == 0, err
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    data = tmp_path / "seq.txt"
    shutil.copy(folder / "seq.txt", data)
    record = json.loads((run / "data.json").read_text())
    record["info"]["data_path"] = str(data)
    (run / "data.json").write_text(json.dumps(record))
    with data.open("a") as f:
        f.write("41 3\n41 4\n")  # changed since training
    assert _predict(capsys, run, history) == (0, before, "")
    data.unlink()  # gone
    assert _predict(capsys, run, history) == (0, before, "")
    page = tmp_path / "explain.html"
    assert main(["explain", str(run), str(history), "-o", str(page)]) == 0, capsys.readouterr().err
    assert page.is_file() and "13" in page.read_text()
    history.write_text("10 999\n")
    code, _, err = _predict(capsys, run, history)
    assert code == 2 and "item(s) ['999'] are not in the training data" in err and len(err.splitlines()) == 1, err


def test_an_older_run_without_an_item_map_reads_the_training_file(tiny, tmp_path, capsys):
    folder, trained = tiny
    history = tmp_path / "history.txt"
    history.write_text("10 11 12 13\n")
    code, before, err = _predict(capsys, trained, history)
    assert code == 0, err
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    record = json.loads((old / "data.json").read_text())
    del record["info"]["item_ids"]  # written before the map was kept
    (old / "data.json").write_text(json.dumps(record))
    assert _predict(capsys, old, history) == (0, before, "")
    record["info"]["data_path"] = str(tmp_path / "gone.txt")
    (old / "data.json").write_text(json.dumps(record))
    code, _, err = _predict(capsys, old, history)
    assert code == 2 and "gone.txt is gone" in err and len(err.splitlines()) == 1, err


def test_a_predict_input_in_training_format_is_one_line(tiny, tmp_path, capsys):
    """``user item`` lines (the training file's format) were read as a history of items: user 10's
    lines became items 10, 31, 10, 32, 10, 33 (user and item ids are both numbers here)."""
    _, run = tiny
    lines = tmp_path / "user10.txt"
    lines.write_text("10 31\n10 32\n10 33\n")
    code, out, err = _predict(capsys, run, lines)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, (out, err)
    assert str(lines) in err and "'user item' lines" in err and "one history" in err, err
    pairs = tmp_path / "pairs.txt"  # a history written two items a line, no id repeated in the first column
    pairs.write_text("10 11\n12 13\n")
    assert _predict(capsys, run, pairs)[0] == 0
