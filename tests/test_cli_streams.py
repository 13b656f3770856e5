"""`attnlab shard` and training from shards through the command line, including a shard that
is truncated mid-stream: one line naming it and exit 2, or with --data.skip_bad the run goes
on and metrics.json says how many samples it skipped. Streamed text runs write report.html;
shard patterns train, evaluate and explain, and a bad one is one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.cli import main

TINY = ["--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2", "--train.batch_size", "8",
        "--train.progress", "false"]


def _page_data(path: Path) -> dict:
    block = re.search(r'<script type="application/json" id="attnlab-data">(.*?)</script>', path.read_text(), re.DOTALL)
    return json.loads(block.group(1))


def _folder(root: Path, bad: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(20):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / c / f"{k}.png")
    if bad:
        (root / "b" / "7.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    return root


def _shard(tmp: Path, capsys) -> Path:
    out = tmp / "shards"
    assert main(["shard", str(_folder(tmp / "f")), str(out), "--shard-size", "8", "--data.image_size", "[8,8]"]) == 0
    line = capsys.readouterr().out
    assert "train 32 in 4 shard(s)" in line, line
    return out


def test_truncated_shard_stops_with_its_name(tmp_path, capsys):
    shards = _shard(tmp_path, capsys)
    victim = shards / "train-000002.tar"
    victim.write_bytes(victim.read_bytes()[:1500])
    argv = ["train", "--task", "images", "--data", str(shards), "--epochs", "1", "--out", str(tmp_path / "run"),
            "--train.num_workers", "2", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(victim) in err and "Traceback" not in err, err


def test_truncated_shard_skipped_and_counted(tmp_path, capsys):
    shards = _shard(tmp_path, capsys)
    victim = shards / "train-000002.tar"
    victim.write_bytes(victim.read_bytes()[:1500])
    run = tmp_path / "run"
    argv = ["train", "--task", "images", "--data", str(shards), "--epochs", "2", "--out", str(run),
            "--data.skip_bad", "true", *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    skipped = json.loads((run / "metrics.json").read_text())["skipped_samples"]
    assert skipped["val"] == skipped["test"] == 0
    assert 2 <= skipped["train"] <= 2 * 8  # the unreadable rest of one 8-sample shard, in each of 2 epochs


def test_unreadable_image_in_a_folder_skipped_and_counted(tmp_path, capsys):
    root = _folder(tmp_path / "f", bad=True)
    run = tmp_path / "run"
    argv = ["train", "--task", "images", "--data", str(root), "--epochs", "1", "--out", str(run),
            "--data.skip_bad", "true", "--data.image_size", "[8,8]", "--data.lazy", "true", *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["skipped_files"] == 1
    assert json.loads((run / "data.json").read_text())["info"]["skipped_files"] == [str(root / "b" / "7.png")]


def _text_shards(tmp_path: Path) -> Path:
    """Shards (6 examples each) of a 40-line sentiment file of two classes."""
    rows = ["pos\tgood movie great fun", "neg\tbad boring film", "pos\tloved it a lot", "neg\tterrible acting, dull"]
    src = tmp_path / "t.tsv"
    src.write_text("\n".join(f"{r} {i}" for i in range(10) for r in rows) + "\n")
    shards = tmp_path / "s"
    assert main(["shard", str(src), str(shards), "--task", "text-classification", "--shard-size", "6"]) == 0
    return shards


def test_text_shards_train_end_to_end(tmp_path, capsys):
    shards = _text_shards(tmp_path)
    run = tmp_path / "run"
    argv = ["train", "--task", "text-classification", "--data", str(shards), "--epochs", "2", "--out", str(run),
            "--train.batch_size", "8", "--train.progress", "false", "--train.num_workers", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_samples"] == {"train": 0, "val": 0, "test": 0} and 0 <= metrics["test"]["accuracy"] <= 1
    assert (run / "tokenizer.json").is_file()
    # the report, as an in-memory text run writes it: the first test examples read from the stream, titled
    # with their text, and the card scored on the first validation examples
    data = _page_data(run / "report.html")
    assert len(data["examples"]) == 4 and data["examples"][0]["kind"] == "tokens"
    assert all(ex["title"].startswith(f"test #{i}: ") for i, ex in enumerate(data["examples"]))
    assert data["examples"][0]["title"][len("test #0: "):] in (tmp_path / "t.tsv").read_text()
    assert data["card"]["split"] == "validation" and data["card"]["examples"] == 4  # the whole val split: 10% of 40


def test_text_shards_from_a_pattern(tmp_path, capsys):
    shards = _text_shards(tmp_path)
    pattern, run = f"{shards}/train-{{000000..000002}}.tar", tmp_path / "run"
    argv = ["train", "--task", "text-classification", "--data", pattern, "--epochs", "1", "--out", str(run),
            "--train.batch_size", "6", "--train.progress", "false"]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((run / "data.json").read_text())
    assert record["info"]["shards"] == pattern
    assert [record["summary"][f"{k}_size"] for k in ("train", "val", "test")] == [18, 4, 4]  # 3 of 6 training shards
    assert (run / "report.html").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0  # reads the same shards again, from data.json's config
    assert main(["explain", str(run), "--faithfulness", "--limit", "3", "--method", "raw,random", "--steps", "2"]) == 0
    assert "raw" in capsys.readouterr().out  # the first 3 validation examples, read from the stream


def test_a_bad_shard_pattern_is_one_line_naming_it(tmp_path, capsys):
    shards = _shard(tmp_path, capsys)
    pattern = f"{shards}/train-{{000003..000005}}.tar"  # train-000004 and -000005 are not in shards.json
    argv = ["train", "--task", "images", "--data", pattern, "--epochs", "1", "--out", str(tmp_path / "run"), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and pattern in err and "does not list" in err and "Traceback" not in err, err
    assert main([*argv[:4], f"{shards}/nothing-*.tar", *argv[5:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "matches no file" in err, err


AUDIO = ["--task", "audio", "--epochs", "1", "--train.batch_size", "4", "--train.progress", "false",
         "--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--model.stem_channels", "[4]",
         "--model.patch_size", "[2,2]"]


def test_audio_lazy_and_shards_train_end_to_end(tmp_path, capsys):
    from tests.data.test_lazy_audio import audio_folder

    root = tmp_path / "wavs"
    audio_folder(root)
    small = ["--data.duration", "0.256", "--data.n_mels", "16"]
    lazy = tmp_path / "lazy"
    argv = ["train", "--data", str(root), "--out", str(lazy), "--data.lazy", "true", "--train.num_workers", "1",
            *small, *AUDIO]
    assert main(argv) == 0, capsys.readouterr().err
    shards = tmp_path / "s"
    assert main(["shard", str(root), str(shards), "--task", "audio", "--shard-size", "5", *small]) == 0
    assert "train 12 in 3 shard(s)" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--data", str(shards), "--out", str(run), *AUDIO]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_samples"] == {"train": 0, "val": 0, "test": 0} and 0 <= metrics["test"]["accuracy"] <= 1
    record = json.loads((run / "data.json").read_text())
    assert record["info"]["audio"] == json.loads((lazy / "data.json").read_text())["info"]["audio"]
    assert record["info"]["audio"]["n_mels"] == 16 and record["info"]["shards"] == str(shards)


@pytest.mark.parametrize("task, target, takes", [("images", "regression", "class or multilabel"),
                                                 ("audio", "multilabel", "class")])
def test_shard_refuses_targets_its_writer_cannot_hold_before_writing(tmp_path, capsys, task, target, takes):
    src = tmp_path / "labels.csv"
    src.write_text("path,a,b\nx.png,1,0\n")  # never read: the option is refused first
    out = tmp_path / "shards"
    assert main(["shard", str(src), str(out), "--task", task, f"--data.target={target}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"attnlab shard --task {task} writes --data.target {takes}, not {target}"), err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_shard_into_a_file_or_from_a_bad_folder_is_one_line_and_leaves_nothing(tmp_path, capsys):
    """OUT_DIR naming a file is refused by name (it was a NotADirectoryError traceback); a source
    that stops the writer leaves no new, empty OUT_DIR behind."""
    src = _folder(tmp_path / "photos")
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    assert main(["shard", str(src), str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{taken} is a file" in err and len(err.splitlines()) == 1, err
    assert taken.read_text() == "keep me"
    bad = _folder(tmp_path / "bad", bad=True)
    out = tmp_path / "new" / "shards"
    assert main(["shard", str(bad), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read image" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "new").exists()


def _relisted_shards(shards: Path, out: Path, order: list[str]) -> Path:
    """A copy of ``shards`` whose index lists its classes in ``order``: the same samples, each
    ``.cls`` renumbered to its class's position in ``order`` (shards written from another folder
    or file, whose classes sorted otherwise)."""
    from attnlab.data.shards import INDEX_NAME, read_samples, write_split

    index = json.loads((shards / INDEX_NAME).read_text())
    old = [str(n) for n in index["class_names"]]
    renumber = {str(old.index(n)).encode(): str(order.index(n)).encode() for n in old if n in order}
    for split, entries in index["splits"].items():
        samples = [(key, {**sample, "cls": renumber[sample["cls"]]})
                   for entry in entries for key, sample in read_samples(shards / entry["file"])]
        index["splits"][split] = write_split(out, split, iter(samples), 4)
    index["class_names"] = order
    (out / INDEX_NAME).write_text(json.dumps(index))
    return out


def _test_metrics(capsys, run: Path, data: Path) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data), "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["test"]


def test_image_shards_listing_the_runs_classes_in_another_order_are_read_by_name(tmp_path, capsys):
    """Shards label a sample by its class's position in their own list: shards holding a run's
    classes in another order are relabelled by class name (as a folder is) and score exactly as
    the shards in the run's order; shards with a class the run lacks are one line naming it."""
    shards, run = _shard(tmp_path, capsys), tmp_path / "run"  # written from the folder tmp_path / "f"
    assert main(["train", "--task", "images", "--data", str(tmp_path / "f"), "--data.image_size", "[8,8]", "--epochs",
                 "1", "--model.patch_size", "4", "--out", str(run), *TINY]) == 0, capsys.readouterr().err
    swapped = _relisted_shards(shards, tmp_path / "swapped", ["b", "a"])
    own = _test_metrics(capsys, run, shards)
    assert _test_metrics(capsys, run, swapped) == pytest.approx(own, abs=1e-6)
    wider = _relisted_shards(shards, tmp_path / "wider", ["b", "x", "a"])  # a class the run never had
    assert main(["evaluate", str(run), "--data", str(wider)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the run has no class 'x' (its classes: ['a', 'b'])" in err and len(err.splitlines()) == 1, err


def test_text_shards_listing_the_runs_classes_in_another_order_are_read_by_name(tmp_path, capsys):
    shards = _text_shards(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--task", "text-classification", "--data", str(shards), "--epochs", "1", "--out", str(run),
                 *TINY]) == 0, capsys.readouterr().err
    assert json.loads((run / "data.json").read_text())["class_names"] == ["neg", "pos"]
    swapped = _relisted_shards(shards, tmp_path / "swapped", ["pos", "neg"])
    assert _test_metrics(capsys, run, swapped) == pytest.approx(_test_metrics(capsys, run, shards), abs=1e-6)
