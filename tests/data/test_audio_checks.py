"""Audio sources refused by `list_audio_files` / `load_audio_task`, each in one line naming the
culprit: a class only the test split holds, a root mixing the two layouts, an empty class folder."""

from __future__ import annotations

import pytest

from attnlab.cli import main
from attnlab.data.audio import list_audio_files, load_audio_task
from attnlab.errors import DataError
from tests.data.test_audio import _fsdd_folder, sine, write_wav


def test_a_label_only_in_the_fsdd_test_split_is_refused(tmp_path):
    root = _fsdd_folder(tmp_path / "fsdd", count=6)
    write_wav(root / "9_ann_0.wav", sine(900, 8000, 0.3), 8000)  # index 0: the official test split
    with pytest.raises(DataError, match=r"test label '9' never seen in training .*9_ann_0\.wav.*index 5 or more"):
        list_audio_files(root)


def test_a_label_whose_training_files_were_skipped_is_refused(tmp_path):
    root = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3), speakers=("ann",), count=6)
    (root / "3_ann_5.wav").write_bytes(b"not audio")  # digit 3's one training file
    with pytest.raises(DataError, match=r"test label '3' never seen in training .*skipped as unreadable"):
        load_audio_task(root, skip_bad=True, val_fraction=0.0, n_mels=16, duration=0.256)


def test_a_root_mixing_loose_files_and_class_folders_is_refused(tmp_path, capsys):
    root = _fsdd_folder(tmp_path / "mixed", count=6)
    for i in range(3):
        write_wav(root / "yes" / f"{i}.wav", sine(500, 8000, 0.3), 8000)
    with pytest.raises(DataError, match=r"mixes the two audio layouts: loose .wav files \(e.g. 1_ann_0.wav\) and class folders of them \(e.g. yes/\)"):
        list_audio_files(root)
    assert list_audio_files(root, layout="fsdd").layout == "fsdd"  # the layout named: only its files
    out = tmp_path / "run"
    assert main(["train", "--task", "audio", "--data", str(root), "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mixes the two audio layouts" in err and not out.exists(), err


def test_an_empty_class_folder_is_refused(tmp_path):
    for name in ("no", "yes"):
        for i in range(3):
            write_wav(tmp_path / "src" / name / f"{i}.wav", sine(400, 8000, 0.3), 8000)
    (tmp_path / "src" / "maybe").mkdir()
    with pytest.raises(DataError, match=r"class folder .*maybe holds no \.wav files"):
        list_audio_files(tmp_path / "src")
