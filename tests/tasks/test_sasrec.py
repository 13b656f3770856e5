"""SASRec runs at inference time (`attnlab.tasks.sasrec`): predict and explain read the run's
item-id map from its data.json, so they need no training file; an older run without the map
still reads it from the file; a predict input in training format is one line, not read as items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

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


# --- leave-one-out ranking metrics against a plain sort (Kang & McAuley 2018, section IV-B) ---------

def _sorted_rank_reference(scores: np.ndarray) -> np.ndarray:
    """0-based position of candidate 0 when each row is sorted best first, ties put before it
    (the pessimistic order): a plain float64 sort, independent of `target_ranks`."""
    ranks = []
    for row in scores.astype(np.float64):
        # sort key: higher score first; among equal scores the held-out item (index 0) goes last
        order = np.lexsort((np.arange(len(row)) == 0, -row))
        ranks.append(int(np.flatnonzero(order == 0)[0]))
    return np.asarray(ranks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hr_and_ndcg_at_10_match_a_sort_of_100_negatives_and_the_positive(seed):
    from attnlab.tasks.sasrec import ranking_metrics, target_ranks

    rng = np.random.default_rng(seed)
    users = 300
    scores = rng.normal(size=(users, 101))  # the paper: the held-out item and 100 sampled negatives
    scores[:, 0] += rng.uniform(0, 3, size=users)  # a model better than chance
    scores[::7, 1:4] = scores[::7, :1]  # exact ties with the held-out item on some rows
    scores = np.round(scores, 1)  # more ties among negatives
    ref_rank = _sorted_rank_reference(scores)
    ranks = target_ranks(torch.from_numpy(scores))
    assert ranks.tolist() == ref_rank.tolist()
    m = ranking_metrics(ranks, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert m[f"hr@{k}"] == pytest.approx(np.mean(ref_rank < k), abs=1e-12)
    for k in (5, 10):
        ndcg = np.where(ref_rank < k, 1.0 / np.log2(ref_rank + 2.0), 0.0).mean()
        assert m[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)
    assert m["mrr"] == pytest.approx(np.mean(1.0 / (ref_rank + 1.0)), abs=1e-12)
    assert 0.0 < m["ndcg@10"] < m["hr@10"] < 1.0  # the case is not degenerate


def test_a_nan_score_never_ranks_the_held_out_item_first():
    """A NaN score compares False with everything: ``others >= NaN`` counted no one above the
    held-out item, so a model whose scores went NaN scored HR@10 = NDCG@10 = 1 and would be the
    kept checkpoint. A NaN held-out score now ranks last, and a NaN negative counts against it."""
    from attnlab.tasks.sasrec import SasrecObjective, ranking_metrics, target_ranks

    nan = float("nan")
    scores = torch.tensor([[nan, 0.1, 0.2, 0.3], [nan, nan, nan, nan], [0.5, nan, 0.1, 0.2], [0.5, 0.1, 0.2, 0.3]])
    assert target_ranks(scores).tolist() == [3, 3, 1, 0]
    m = ranking_metrics(target_ranks(torch.full((5, 101), nan)))
    assert m["hr@10"] == 0.0 and m["ndcg@10"] == 0.0 and m["mrr"] == pytest.approx(1 / 101)
    assert SasrecObjective.metric == "ndcg@10"  # the selection metric this protects
