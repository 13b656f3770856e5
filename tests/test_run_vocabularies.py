"""A finished run reads data with the vocabularies it was trained with (`attnlab.tasks.base.RunVocabulary`).

Its tokenizer, classes, series shape and item-id map come from its data.json, never from the
data file given now: ``attnlab evaluate RUN --data OTHER`` scores the model on the ids it learnt
(the same metrics as the run's own evaluation when only the training part of the file changed),
``--resume`` continues after the file changed, ``--init RUN`` carries a translation run's
tokenizer, and data the run cannot read (a label it has no class for, another series length,
an item it never saw) is refused in one line with exit code 2. Tiny synthetic data, 1 epoch.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.cli import main

_WORDS = ("the cat dog sat ran on a mat log red big small fox jumped over lazy quick brown and then went home "
          "to see it was not").split()


def _sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _evaluate(capsys, run: Path, data: Path | None = None) -> dict:
    argv = ["evaluate", str(run), "--json"] + ([] if data is None else ["--data", str(data)])
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)["test"]


def _refused(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ---- language model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    rng = random.Random(0)
    text = "\n".join(_sentence(rng, 8) for _ in range(200)) + "\n"
    (root / "a.txt").write_text(text)
    # The same length, so the same validation text: one training character the tokenizer never saw.
    (root / "b.txt").write_text("#" + text[1:])
    run = root / "run"
    assert main(["train", "--task", "language-model", "--data", str(root / "a.txt"), "--out", str(run), "--epochs", "1",
                 "--model.dim", "32", "--model.depth", "1", "--model.num_heads", "2", "--data.block_size", "16",
                 "--train.batch_size", "16"]) == 0
    return root, run


def test_lm_evaluate_on_a_changed_file_uses_the_runs_tokenizer(lm_run, capsys):
    root, run = lm_run
    own = _evaluate(capsys, run)
    assert _evaluate(capsys, run, root / "b.txt") == pytest.approx(own, abs=1e-9)


def test_lm_resume_after_the_file_changed(lm_run, tmp_path, capsys):
    root, run = lm_run
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    assert main(["train", "--resume", str(resumed), "--data", str(root / "b.txt"), "--epochs", "2"]) == 0
    assert (resumed / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()


# ---- translation ----------------------------------------------------------------------------


def _parallel(folder: Path, rng: random.Random, sizes: dict[str, int], extra: tuple[str, str] | None = None) -> None:
    folder.mkdir(parents=True)
    for split, n in sizes.items():
        src = [_sentence(rng) for _ in range(n)]
        tgt = [" ".join(reversed(s.split())).upper() for s in src]
        if extra is not None and split == "train":
            src, tgt = src + [extra[0]], tgt + [extra[1]]
        (folder / f"{split}.en").write_text("\n".join(src) + "\n")
        (folder / f"{split}.de").write_text("\n".join(tgt) + "\n")


MT_TINY = ["--epochs", "1", "--model.dim", "32", "--model.encoder_depth", "1", "--model.decoder_depth", "1",
           "--model.num_heads", "2", "--train.batch_size", "16"]


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt")
    sizes = {"train": 120, "val": 16, "test": 16}
    _parallel(root / "a", random.Random(1), sizes)
    # The same pairs plus one training pair of new words: a BPE re-trained on it would shift the ids.
    _parallel(root / "plus", random.Random(1), sizes, extra=("zebra quokka xylophone", "ZEBRA QUOKKA XYLOPHON"))
    _parallel(root / "other", random.Random(2), sizes, extra=("wombat yak", "WOMBAT YAK"))
    run = root / "run"
    assert main(["train", "--task", "translation", "--data", str(root / "a"), "--out", str(run), *MT_TINY]) == 0
    return root, run


def test_translation_evaluate_with_another_pair_uses_the_runs_tokenizer(mt_run, capsys):
    root, run = mt_run
    own = _evaluate(capsys, run)
    assert _evaluate(capsys, run, root / "plus") == pytest.approx(own, abs=1e-9)


def test_translation_init_from_a_run_keeps_its_token_ids(mt_run, tmp_path, capsys):
    root, run = mt_run
    tuned = tmp_path / "tuned"
    assert main(["train", "--task", "translation", "--data", str(root / "other"), "--init", str(run), "--out", str(tuned),
                 "--epochs", "1", "--train.batch_size", "16"]) == 0
    assert (tuned / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()
    record = json.loads((tuned / "data.json").read_text())
    assert record["info"]["src_tokenizer"] == json.loads((run / "data.json").read_text())["info"]["src_tokenizer"]
    assert record["init"]["source"] == str(run.resolve())
    capsys.readouterr()
    # read again (evaluate) with the carried tokenizer, from its data.json alone
    assert main(["evaluate", str(tuned), "--data", str(root / "plus")]) == 0


def test_translation_init_refuses_a_tokenizer_option(mt_run, tmp_path, capsys):
    root, run = mt_run
    _refused(capsys, ["train", "--task", "translation", "--data", str(root / "other"), "--init", str(run),
                      "--out", str(tmp_path / "x"), "--data.vocab_size", "500"], "--data.vocab_size 500", "--init")
    assert not (tmp_path / "x").exists()


def test_translation_resume_after_a_pair_was_added(mt_run, tmp_path):
    root, run = mt_run
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    assert main(["train", "--resume", str(resumed), "--data", str(root / "plus"), "--epochs", "2"]) == 0
    assert (resumed / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()


# ---- text classification --------------------------------------------------------------------


def _labelled(folder: Path, rng: random.Random, extra: str | None = None, labels=("pos", "neg")) -> None:
    folder.mkdir(parents=True)
    for split, n in (("train", 80), ("dev", 16), ("test", 16)):
        lines = [f"{labels[i % 2]}\t{_sentence(rng)} {'good' if i % 2 == 0 else 'bad'}" for i in range(n)]
        if extra is not None and split == "train":
            lines.append(extra)
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    _labelled(root / "a", random.Random(3))
    _labelled(root / "plus", random.Random(3), extra="pos\taardvark badger capybara good")
    _labelled(root / "other_labels", random.Random(3), labels=("pos", "meh"))
    run = root / "run"
    # the task defaults (--data.tokenizer word, lowercase) go into config.yaml: read again, they only
    # said how the saved tokenizer was made
    assert main(["train", "--task", "text-classification", "--data", str(root / "a"), "--out", str(run), "--epochs", "1",
                 "--model.dim", "32", "--model.depth", "1", "--model.num_heads", "2", "--train.batch_size", "16"]) == 0
    return root, run


def test_text_evaluate_with_new_training_words_uses_the_runs_tokenizer(text_run, capsys):
    root, run = text_run
    own = _evaluate(capsys, run)
    assert _evaluate(capsys, run, root / "plus") == pytest.approx(own, abs=1e-9)


def test_text_evaluate_refuses_a_label_the_run_has_no_class_for(text_run, capsys):
    root, run = text_run
    _refused(capsys, ["evaluate", str(run), "--data", str(root / "other_labels")], "'meh'", "'neg', 'pos'", "train.tsv")


def test_text_resume_after_the_training_file_changed(text_run, tmp_path):
    root, run = text_run
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    assert main(["train", "--resume", str(resumed), "--data", str(root / "plus"), "--epochs", "2"]) == 0
    assert (resumed / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()


# ---- time series ----------------------------------------------------------------------------


def _ucr(folder: Path, labels=("1", "2"), length: int = 24, test_labels=None) -> None:
    rng = np.random.default_rng(4)
    folder.mkdir(parents=True)
    for split, n, names in (("TRAIN", 20, labels), ("TEST", 10, test_labels or labels)):
        rows = []
        for i in range(n):
            k = i % len(names)
            values = np.sin(np.linspace(0, (k + 1) * np.pi, length)) + 0.1 * rng.standard_normal(length)
            rows.append("\t".join([names[k], *(f"{v:.5f}" for v in values)]))
        (folder / f"Toy_{split}.tsv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def ts_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    _ucr(root / "a")
    _ucr(root / "ab", labels=("a", "b"))
    _ucr(root / "third", test_labels=("1", "2", "3"))
    _ucr(root / "short", length=20)
    _ucr(root / "only_2", labels=("2",))
    run = root / "run"
    assert main(["train", "--task", "timeseries", "--data", str(root / "a"), "--out", str(run), "--epochs", "1",
                 "--model.dim", "16", "--model.stem_channels", "8"]) == 0
    return root, run


@pytest.mark.parametrize("folder, needles", [
    ("ab", ["Toy_TRAIN.tsv", "label 'a'", "['1', '2']"]),
    ("third", ["Toy_TEST.tsv", "label '3'", "['1', '2']"]),
    ("short", ["Toy_TRAIN.tsv", "length 20", "length 24"]),
])
def test_timeseries_evaluate_refuses_data_that_does_not_fit_the_run(ts_run, capsys, folder, needles):
    root, run = ts_run
    _refused(capsys, ["evaluate", str(run), "--data", str(root / folder)], *needles)


def test_timeseries_evaluate_of_one_of_the_runs_classes(ts_run, capsys):
    root, run = ts_run
    # series of class "2" only: read against the run's two classes (index 1), not refused as a
    # single-class training split nor renumbered as class 0
    result = _evaluate(capsys, run, root / "only_2")
    assert 0.0 <= result["accuracy"] <= 1.0


def test_a_relative_data_path_is_recorded_so_evaluate_finds_it_from_anywhere(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    _ucr(project / "data" / "a")
    monkeypatch.chdir(project)
    assert main(["train", "--task", "timeseries", "--data", "data/a", "--out", "run", "--epochs", "1",
                 "--model.dim", "16", "--model.stem_channels", "8"]) == 0
    capsys.readouterr()
    saved = json.loads((project / "run" / "metrics.json").read_text())["test"]
    monkeypatch.chdir(tmp_path)  # elsewhere: "data/a" would name nothing here
    result = _evaluate(capsys, project / "run")
    assert result["accuracy"] == pytest.approx(saved["accuracy"], abs=1e-9)
    assert result["loss"] == pytest.approx(saved["loss"], rel=1e-5)


# ---- sequential recommendation --------------------------------------------------------------


def _interactions(path: Path, users: range, items: range, seed: int = 5) -> None:
    rng = np.random.default_rng(seed)
    lines = [f"{u} {int(i)}" for u in users for i in rng.choice(np.asarray(items), size=8, replace=False)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrec")
    _interactions(root / "a.txt", range(1, 161), range(1, 301))
    lines = (root / "a.txt").read_text().splitlines()
    (root / "small.txt").write_text("\n".join(lines[: 8 * 40]) + "\n")  # 40 of its users: fewer than a training batch
    _interactions(root / "unknown.txt", range(161, 201), range(250, 400), seed=7)  # items 301.. the run never saw
    run = root / "run"
    assert main(["train", "--task", "sasrec", "--data", str(root / "a.txt"), "--out", str(run), "--epochs", "1",
                 "--model.dim", "16", "--train.batch_size", "64", "--data.num_negatives", "20"]) == 0
    return root, run


def test_sasrec_keeps_its_item_map(sasrec_run):
    _, run = sasrec_run
    info = json.loads((run / "data.json").read_text())["info"]
    ids = info["item_ids"].split()
    assert len(ids) == info["num_items"] and [int(i) for i in ids] == sorted(int(i) for i in ids)


def test_sasrec_evaluate_refuses_an_item_the_run_never_saw(sasrec_run, capsys):
    root, run = sasrec_run
    _refused(capsys, ["evaluate", str(run), "--data", str(root / "unknown.txt")], "unknown.txt:", "item '3", "the run's item map")


def test_sasrec_evaluate_of_a_small_file(sasrec_run, capsys):
    root, run = sasrec_run
    result = _evaluate(capsys, run, root / "small.txt")
    assert 0.0 <= result["ndcg@10"] <= 1.0


def test_sasrec_run_without_an_item_map_reads_as_before(sasrec_run, tmp_path, capsys):
    root, run = sasrec_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    record = json.loads((old / "data.json").read_text())
    del record["info"]["item_ids"]  # a run written before the map was kept
    (old / "data.json").write_text(json.dumps(record))
    assert _evaluate(capsys, old) == pytest.approx(_evaluate(capsys, run), abs=1e-9)


def _image_folder(root: Path, classes: dict[str, int], *, rgb: bool = False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            shape = (8, 8, 3) if rgb else (8, 8)
            Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_runs_evaluate_other_folders_with_their_classes_and_statistics(tmp_path, capsys):
    data = _image_folder(tmp_path / "img", {"a": 10, "b": 10, "c": 10})
    run = tmp_path / "run"
    assert main(["train", "--task", "images", "--data", str(data), "--data.image_size", "8", "--epochs", "1",
                 "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2", "--model.patch_size", "4",
                 "--train.batch_size", "8", "--train.progress", "false", "--out", str(run)]) == 0
    own = json.loads((run / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["loss"] == pytest.approx(own["loss"], rel=1e-6)
    other = _image_folder(tmp_path / "xy", {"a": 10, "x": 10})  # a class the run never had
    assert main(["evaluate", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the run has no class 'x' (its classes: ['a', 'b', 'c'])" in err and len(err.splitlines()) == 1, err
    colour = _image_folder(tmp_path / "rgb", {"c": 10, "b": 10}, rgb=True)  # two of its classes, in colour: read as the run's grey
    assert main(["evaluate", str(run), "--data", str(colour), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["accuracy"] >= 0


def test_image_runs_evaluate_shards_with_their_classes_and_spec(tmp_path, capsys):
    """Shards hold each image file's bytes, so a run reads them with its own size, channels and
    training statistics: the same metrics as the folder they were written from, whatever spec
    `attnlab shard` used. Shards of some of its classes are labelled by name, as the run's
    classes; shards of a class the run lacks are refused, naming it and the run's classes."""
    from PIL import Image

    data = _image_folder(tmp_path / "img", {"a": 10, "b": 10, "c": 10})
    run = tmp_path / "run"
    assert main(["train", "--task", "images", "--data", str(data), "--data.image_size", "8", "--epochs", "1",
                 "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2", "--model.patch_size", "4",
                 "--train.batch_size", "8", "--train.progress", "false", "--out", str(run)]) == 0
    capsys.readouterr()
    dark = tmp_path / "dark"  # the same images at half brightness: other statistics
    for f in sorted(data.glob("*/*.png")):
        (dark / f.parent.name).mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(Image.open(f)) // 2).astype(np.uint8)).save(dark / f.parent.name / f.name)
    for folder, size in ((data, "16"), (dark, "8")):  # another size; the run's size but other statistics
        shards = tmp_path / f"{folder.name}_{size}"
        assert main(["shard", str(folder), str(shards), "--data.image_size", size, "--shard-size", "4"]) == 0
        capsys.readouterr()
        assert _evaluate(capsys, run, shards) == pytest.approx(_evaluate(capsys, run, folder), abs=1e-6)
    two = _image_folder(tmp_path / "two", {"b": 10, "c": 10})
    assert main(["shard", str(two), str(tmp_path / "two_shards"), "--data.image_size", "8"]) == 0
    capsys.readouterr()
    assert _evaluate(capsys, run, tmp_path / "two_shards") == pytest.approx(_evaluate(capsys, run, two), abs=1e-6)
    from attnlab.run import load_run
    from attnlab.run_config import finished_task_data

    config, _, _ = load_run(run)
    config.data = str(tmp_path / "two_shards")
    read = finished_task_data(config, run)
    assert read.class_names == ["a", "b", "c"] and {int(y) for _, y in read.test.evaluation_view()} == {1, 2}
    other = _image_folder(tmp_path / "ax", {"a": 10, "x": 10})
    assert main(["shard", str(other), str(tmp_path / "ax_shards"), "--data.image_size", "8"]) == 0
    capsys.readouterr()
    _refused(capsys, ["evaluate", str(run), "--data", str(tmp_path / "ax_shards")], "the run has no class 'x'",
             "['a', 'b', 'c']")
    _refused(capsys, ["train", "--task", "images", "--data", str(tmp_path / "two_shards"), "--data.target", "multilabel",
                      "--out", str(tmp_path / "ml")], "holds shards written with --data.target class",
             "with --data.target class, not multilabel")


def test_image_class_run_evaluate_of_a_label_csv_says_it_needs_a_multilabel_run(tmp_path, capsys):
    """evaluate takes no --data.target: the hint names the run's kind, not a flag it cannot take."""
    data = _image_folder(tmp_path / "img", {"a": 6, "b": 6})
    run = tmp_path / "run"
    assert main(["train", "--task", "images", "--data", str(data), "--data.image_size", "8", "--epochs", "1",
                 "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2", "--model.patch_size", "4",
                 "--train.batch_size", "8", "--train.progress", "false", "--out", str(run)]) == 0
    capsys.readouterr()
    table = tmp_path / "labels.csv"
    table.write_text("path,a,b\n" + "".join(f"{data / 'a' / f'{i}.png'},1,0\n" for i in range(6)))
    err = _refused(capsys, ["evaluate", str(run), "--data", str(table)], str(table),
                   "this class run cannot score", "a run trained with --data.target multilabel")
    assert "add --data.target" not in err, err
    _refused(capsys, ["train", "--task", "images", "--data", str(table), "--out", str(tmp_path / "new")],
             "add --data.target multilabel")  # training does take it


def test_audio_runs_evaluate_other_files_with_their_classes(tmp_path, capsys):
    from tests.data.test_audio import _fsdd_folder

    data = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3, 5), count=8)
    run = tmp_path / "run"
    assert main(["train", "--task", "audio", "--data", str(data), "--data.n_mels", "16", "--data.duration", "0.256",
                 "--epochs", "1", "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2",
                 "--train.batch_size", "8", "--train.progress", "false", "--out", str(run)]) == 0
    other = _fsdd_folder(tmp_path / "other", digits=(5, 3), count=8)  # two of its classes: labelled as the run's 5 and 3
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(other), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["accuracy"] >= 0
    from attnlab.run import load_run
    from attnlab.run_config import finished_task_data

    config, _, _ = load_run(run)
    config.data = str(other)
    read = finished_task_data(config, run)
    assert read.class_names == ["1", "3", "5"] and set(read.test.y.tolist()) == {1, 2}  # not 0 and 1: the run's 3 and 5
    unknown = _fsdd_folder(tmp_path / "unknown", digits=(1, 7), count=8)
    assert main(["evaluate", str(run), "--data", str(unknown)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the run has no class '7' (its classes: ['1', '3', '5'])" in err and len(err.splitlines()) == 1, err


def _audio_run(tmp_path: Path, data: Path, *extra: str) -> Path:
    run = tmp_path / "run"
    assert main(["train", "--task", "audio", "--data", str(data), "--data.n_mels", "16", "--data.duration", "0.256",
                 "--epochs", "1", "--model.depth", "1", "--model.dim", "16", "--model.num_heads", "2",
                 "--train.batch_size", "8", "--train.progress", "false", "--out", str(run), *extra]) == 0
    return run


def test_audio_evaluate_normalises_other_files_with_the_runs_statistics(tmp_path, capsys):
    """--data.normalize dataset: another folder's clips get the run's training mean and std (as
    predict gives them), not statistics fitted on that folder's own training split."""
    import soundfile

    from attnlab.data.audio import AudioSpec, prepare_audio
    from attnlab.run import load_run
    from attnlab.run_config import finished_task_data
    from tests.data.test_audio import _fsdd_folder, write_wav

    data = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3, 5), count=8)
    run = _audio_run(tmp_path, data, "--data.normalize", "dataset")
    quiet = tmp_path / "quiet"  # the same clips 40 dB quieter: other dB statistics
    for f in sorted(data.glob("*.wav")):
        samples, rate = soundfile.read(f)
        write_wav(quiet / f.name, samples * 0.01, rate)
    config, _, record = load_run(run)
    config.data = str(quiet)
    read = finished_task_data(config, run)
    spec = AudioSpec.from_dict(record["info"]["audio"])
    assert read.info["audio"] == record["info"]["audio"]
    files = sorted(quiet.glob("*.wav"))
    for k in (0, 3):
        torch.testing.assert_close(read.test.x[k], prepare_audio(files[int(read.test.indices[k])], spec), rtol=0, atol=0)


def test_audio_evaluate_of_a_folder_with_a_sharded_runs_features(tmp_path, capsys):
    """A run trained on shards (features fixed at 16 mels) scores a folder with those features,
    and a folder run refuses shards whose features are not its own, in one line; shards of some of
    its classes are labelled by name, as the run's classes."""
    from tests.data.test_audio import _fsdd_folder

    data = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3, 5), count=8)
    shards = tmp_path / "shards"
    assert main(["shard", str(data), str(shards), "--task", "audio", "--data.n_mels", "16",
                 "--data.duration", "0.256"]) == 0
    run = tmp_path / "sharded"
    assert main(["train", "--task", "audio", "--data", str(shards), "--epochs", "1", "--model.depth", "1",
                 "--model.dim", "16", "--model.num_heads", "2", "--train.batch_size", "8", "--train.progress", "false",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    own = _evaluate(capsys, run)
    assert _evaluate(capsys, run, data) == pytest.approx(own, abs=1e-6)  # the same test files, read from the folder
    folder_run = _audio_run(tmp_path, data, "--data.n_mels", "32", "--data.duration", "0.512")
    _refused(capsys, ["evaluate", str(folder_run), "--data", str(shards)], str(shards), "n_mels")
    two = _fsdd_folder(tmp_path / "two", digits=(3, 5), count=8)
    two_shards = tmp_path / "two_shards"
    assert main(["shard", str(two), str(two_shards), "--task", "audio", "--data.n_mels", "16",
                 "--data.duration", "0.256"]) == 0
    capsys.readouterr()
    assert _evaluate(capsys, run, two_shards) == pytest.approx(_evaluate(capsys, run, two), abs=1e-6)
    seven = _fsdd_folder(tmp_path / "seven", digits=(3, 7), count=8)
    assert main(["shard", str(seven), str(tmp_path / "seven_shards"), "--task", "audio", "--data.n_mels", "16",
                 "--data.duration", "0.256"]) == 0
    _refused(capsys, ["evaluate", str(run), "--data", str(tmp_path / "seven_shards")], "the run has no class '7'",
             "['1', '3', '5']")


def test_audio_evaluate_of_fsdd_test_recordings_alone(tmp_path, capsys):
    """A held-out folder of FSDD test recordings (index 0-4 only) is scored: the same metrics as
    the run's own test split, which holds exactly those files."""
    from tests.data.test_audio import _fsdd_folder

    data = _fsdd_folder(tmp_path / "fsdd", digits=(1, 3, 5), count=8)
    run = _audio_run(tmp_path, data, "--data.normalize", "dataset")
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for f in sorted(data.glob("*_[0-4].wav")):
        (held_out / f.name).write_bytes(f.read_bytes())
    capsys.readouterr()
    assert _evaluate(capsys, run, held_out) == pytest.approx(_evaluate(capsys, run), abs=1e-6)
