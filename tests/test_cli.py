"""The attnlab command line, as a person uses it: train, evaluate, predict, explain, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from attnlab.cli import main

TINY = ["--epochs", "2", "--model.depth", "1", "--model.dim", "32", "--model.num_heads", "2", "--train.batch_size", "64"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits-tiny"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_the_run_directory(run_dir):
    for name in ("config.yaml", "data.json", "model.safetensors", "metrics.json", "metrics.jsonl", "report.html"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoint" / "state.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "digits" and metrics["model"] == "vit-tiny"
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and metrics["wall_time_s"] > 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_evaluate_reproduces_test_metrics(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert result["test"]["accuracy"] == pytest.approx(saved["test"]["accuracy"], abs=1e-9)


def test_predict_and_explain(run_dir, tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    sample = tmp_path / "digit.npy"
    np.save(sample, digits.images[0])
    assert main(["predict", str(run_dir), str(sample), "--json", "--top-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["class"] in [str(i) for i in range(10)] and len(result["top"]) == 3
    assert 0 <= result["score"] <= 1
    png, html = tmp_path / "x.png", tmp_path / "x.html"
    assert main(["explain", str(run_dir), str(sample), "-o", str(png)]) == 0
    assert main(["explain", str(run_dir), str(sample), "-o", str(html), "--rollout"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
    assert "<canvas" in html.read_text()


def test_predict_reads_a_folders_inputs_and_leaves_out_other_files(run_dir, tmp_path, capsys, caplog):
    """A folder of images with a README beside them: the README stopped the whole command
    ("not an image"); now it is left out, with a warning naming it."""
    from sklearn.datasets import load_digits

    folder = tmp_path / "inputs"
    folder.mkdir()
    images = load_digits().images
    for i in range(3):
        np.save(folder / f"d{i}.npy", images[i])
    (folder / "README.md").write_text("three digits\n")
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(folder), "--json"]) == 0
    assert [r["input"].rsplit("/", 1)[-1] for r in json.loads(capsys.readouterr().out)] == ["d0.npy", "d1.npy", "d2.npy"]
    assert "left out 1 file(s) of other types (e.g. README.md)" in caplog.text
    assert main(["predict", str(run_dir), str(folder / "README.md")]) == 2  # named, it is read (and refused)
    (folder / "only").mkdir()
    (folder / "only" / "notes.txt").write_text("x")
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(folder / "only")]) == 2
    assert "input folder has no files this run reads (.png, .jpg" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--task", "mnist"], "needs --data"),
        (["train", "--task", "mnist", "--data", "/nonexistent/mnist.npz"], "/nonexistent/mnist.npz"),
        (["train", "--task", "nope"], "unknown task 'nope'"),
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["train", "--model.depthh", "2"], "unknown key(s) ['depthh']"),
        (["train", "--train.lr", "-1"], "TrainConfig.lr must be a positive number"),
        (["train", "--train.epochs", "two"], "TrainConfig.epochs must be an integer"),
        (["train", "--seed", "-1"], "TrainConfig.seed must be an integer >= 0, got -1"),
        (["train", "--seed", str(2**33)], "TrainConfig.seed must be below 2**32"),
        (["train", "--train.num_workers", "-1"], "TrainConfig.num_workers must be an integer >= 0"),
        (["train", "--train.checkpoint_every", "-1"], "TrainConfig.checkpoint_every must be an integer >= 0"),
        (["train", "--train.early_stopping_patience", "-1"], "TrainConfig.early_stopping_patience must be an integer >= 0"),
        (["train", "--config", "/nonexistent.yaml"], "config file not found"),
        (["train", "--resume", "/nonexistent/run"], "cannot resume"),
        (["train", "--resume", "/nonexistent/run", "--out", "/tmp/x"], "--out /tmp/x does not apply"),  # was ignored
        (["train", "--resume", "/nonexistent/run", "--overwrite"], "--overwrite does not apply"),  # was ignored
        (["evaluate", "/nonexistent/run"], "run directory not found"),
        (["predict", "/nonexistent/run", "/nonexistent.png"], "input not found"),
        (["explain", "/nonexistent/run", "/", "-o", "x.png"], "/: a folder; explain takes one input file (predict takes folders)"),
        (["bench", "nope"], "no benchmark named 'nope'"),
        (["bench", "_common"], "no benchmark named '_common'"),  # a helper module, not a benchmark
        (["bench", "../src/attnlab/__main__"], "no benchmark named '../src/attnlab/__main__'"),  # ran attnlab itself
        (["train", "--objective.label_smothing", "0.1"], "unknown --objective.* option(s) ['label_smothing']"),
        (["train", "--objective.label_smoothing", "1.5"], "objective.label_smoothing must be in [0, 1)"),
        (["train", "--eval.beam_size", "4"], "this task takes no --eval.* options"),
        (["train", "--task", "translation", "--data", ".", "--eval.beam_size", "0"], "eval.beam_size must be an integer >= 1"),
        (["train", "--model", "gpt-lm"], "model 'gpt-lm' does not fit task 'digits'"),
        (["train", "--train.device", "cuda:7"], "device 'cuda:7' is not available"),
        (["train", "--train.device", "gpu"], "unknown device 'gpu'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["predict", "run", "x.png", "--top-k", "0"], ["predict", "run", "x.png", "--top-k", "-1"],
                                  ["shard", "src", "out", "--shard-size", "0"], ["shard", "src", "out", "--seed", "-1"]])
def test_counts_below_their_floor_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"argument {argv[-2]}: must be an integer >= " in capsys.readouterr().err


def test_existing_run_dir_is_not_overwritten(run_dir, capsys):
    assert main(["train", "--out", str(run_dir), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(run_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = (other / "config.yaml").read_text().replace("depth: 1", "depth: 2")
    (other / "config.yaml").write_text(config)
    assert main(["evaluate", str(other)]) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_list_and_help_as_a_subprocess():
    # The seven interpreters start at once (each spends seconds importing torch; one after another took ~19 s)
    helps = {sub: subprocess.Popen([sys.executable, "-m", "attnlab", sub, "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
             for sub in ("train", "evaluate", "predict", "explain", "bench", "list")}
    out = subprocess.run([sys.executable, "-m", "attnlab", "list"], capture_output=True, text=True, check=True).stdout
    assert "vit-tiny" in out and "hybrid-cnn" in out and "digits" in out
    for sub, process in helps.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0 and "usage: attnlab" in stdout, (sub, stderr)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("verb", ["evaluate", "predict", "explain"])
def test_an_unavailable_device_is_one_line(run_dir, tmp_path, capsys, verb):
    sample = tmp_path / "digit.npy"
    np.save(sample, np.zeros((8, 8)))
    extra = {"evaluate": [], "predict": [str(sample)], "explain": [str(sample), "-o", str(tmp_path / "x.png")]}[verb]
    assert main([verb, str(run_dir), *extra, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "attnlab: error: device 'cuda' is not available: this machine has no CUDA GPU (use --device cpu or auto)"
    assert not (tmp_path / "x.png").exists()


def test_a_closed_pipe_ends_quietly(run_dir):
    """``attnlab evaluate RUN --json | head -1``: no BrokenPipeError traceback."""
    cmd = f"{sys.executable} -m attnlab evaluate {run_dir} --json | head -1"
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True)
    assert result.stdout == "{\n"
    assert result.stderr == "" and result.returncode in (0, 141)


def test_predict_reads_stdin_and_folders(run_dir, tmp_path, capsys):
    from sklearn.datasets import load_digits

    images = load_digits().images
    folder = tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "a.npy", images[0])
    np.save(folder / "sub" / "b.npy", images[1])
    (folder / ".hidden").write_text("not an input")
    assert main(["predict", str(run_dir), str(folder), "--json", "--device", "cpu"]) == 0
    by_folder = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in by_folder] == [str(folder / "a.npy"), str(folder / "sub" / "b.npy")]
    piped = subprocess.run([sys.executable, "-m", "attnlab", "predict", str(run_dir), "-", "--json"],
                           input=(folder / "a.npy").read_bytes(), capture_output=True, check=True)
    from_stdin = json.loads(piped.stdout)
    assert [r["input"] for r in from_stdin] == ["-"]
    assert from_stdin[0]["class"] == by_folder[0]["class"]
    assert from_stdin[0]["score"] == pytest.approx(by_folder[0]["score"], abs=1e-6)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(run_dir), str(empty)]) == 2
    assert "input folder has no files" in capsys.readouterr().err


def test_old_config_keys_migrate(tmp_path, caplog):
    """A config written before label smoothing moved to the objective still loads, with a warning."""
    from attnlab.run_config import resolve_config

    with caplog.at_level("WARNING", logger="attnlab.run_config"):
        config = resolve_config({"task": "translation", "data": ".", "train": {"label_smoothing": 0.2},
                                 "data_options": {"eval_beam_size": 4}})
    assert config.objective == {"label_smoothing": 0.2} and config.evaluation == {"beam_size": 4, "length_penalty": 1.0}
    assert "label_smoothing" not in config.data_options and "train.label_smoothing is now objective.label_smoothing" in caplog.text


def test_a_corrupt_run_config_is_one_line_naming_line_and_column(run_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "config.yaml").write_text("task: [digits\nmodel: vit-tiny\n")
    for argv in (["evaluate", str(broken)], ["train", "--init", str(broken), "--epochs", "1", "--out", str(tmp_path / "r")]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "config.yaml is not valid YAML" in err and "at line 2, column" in err and len(err.splitlines()) == 1, err


def test_a_whitespace_token_prints_visibly_on_one_line():
    from attnlab.cli.output import result_line

    # a language model's next token: "\n" split the line in two, " " printed as nothing
    assert result_line({"input": "p.txt", "class": "\n", "score": 0.25}) == "p.txt: '\\n' (0.250)"
    assert result_line({"input": "p.txt", "class": " ", "score": 0.25}) == "p.txt: ' ' (0.250)"
    assert result_line({"input": "a.png", "class": "golden retriever", "score": 0.5}) == "a.png: golden retriever (0.500)"


@pytest.mark.parametrize("flag, value", [("--train.lr", "0.5"), ("--train.weight_decay", "0.3"),
                                         ("--train.freeze", "embeddings"), ("--seed", "7")])
def test_resume_refuses_what_the_checkpoint_fixes_and_leaves_the_run_as_it_was(run_dir, tmp_path, flag, value, capsys):
    """The optimizer state on disk holds the run's rate, weight decay and groups: a new value would be
    ignored (lr) or fail late (freeze) after config.yaml was rewritten, so a plain --resume then failed too.
    A new seed would draw other splits and another sample order under the restored random state."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", "--resume", str(run), "--epochs", "3", "--train.progress", "false", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and value in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["train", "--resume", str(run), "--epochs", "3", "--train.progress", "false"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_checkpoint_refused_on_resume_leaves_config_yaml_as_it_was(run_dir, tmp_path, capsys):
    """The checkpoint holds no moving average: refused when it is loaded, which must come before the
    run's config.yaml is rewritten with the refused --train.ema_decay (a plain --resume then still works)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = (run / "config.yaml").read_bytes()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--train.progress", "false", "--train.ema_decay", "0.9"]) == 2
    assert "ema_decay" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == before
    assert main(["train", "--resume", str(run), "--epochs", "3", "--train.progress", "false"]) == 0


def test_overwrite_replaces_the_old_runs_outputs_and_keeps_other_files(run_dir, tmp_path, capsys):
    """--overwrite appended the new epochs to the old metrics.jsonl and left the old TensorBoard events beside
    the new: a 1-epoch run over a 2-epoch one showed three epochs and two curves."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(run), "--overwrite", *TINY, "--epochs", "1", "--train.progress", "false"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 1
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_with_a_config_file_is_refused_not_ignored(run_dir, tmp_path, capsys):
    """--resume reads the run's own config.yaml, which replaced --config's values: each was silently ignored."""
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  lr: 0.5\n")
    before = (run_dir / "config.yaml").read_bytes()
    assert main(["train", "--resume", str(run_dir), "--config", str(other), "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--config {other} would be ignored" in err, err
    assert (run_dir / "config.yaml").read_bytes() == before
