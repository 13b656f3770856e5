"""`attnlab shard` and training from shards through the command line, including a shard that
is truncated mid-stream: one line naming it and exit 2, or with --data.skip_bad the run goes
on and metrics.json says how many samples it skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from attnlab.cli import main

TINY = ["--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2", "--train.batch_size", "8",
        "--train.progress", "false"]


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


def test_text_shards_train_end_to_end(tmp_path, capsys):
    rows = ["pos\tgood movie great fun", "neg\tbad boring film", "pos\tloved it a lot", "neg\tterrible acting, dull"]
    src = tmp_path / "t.tsv"
    src.write_text("\n".join(f"{r} {i}" for i in range(10) for r in rows) + "\n")
    shards = tmp_path / "s"
    assert main(["shard", str(src), str(shards), "--task", "text-classification", "--shard-size", "6"]) == 0
    run = tmp_path / "run"
    argv = ["train", "--task", "text-classification", "--data", str(shards), "--epochs", "2", "--out", str(run),
            "--train.batch_size", "8", "--train.progress", "false", "--train.num_workers", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_samples"] == {"train": 0, "val": 0, "test": 0} and 0 <= metrics["test"]["accuracy"] <= 1
    assert (run / "tokenizer.json").is_file()


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
