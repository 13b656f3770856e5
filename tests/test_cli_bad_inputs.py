"""Bad inputs through the command line: one clear line on stderr, exit code 2, nothing written.

Each case is what a person might hand `attnlab train`: a missing, empty or corrupt data set,
a config file with a wrong key or type. The loaders' own tests check every message in
detail; these check the CLI turns each into one line naming the culprit and leaves no
half-written run directory behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnlab.cli import main


def _images(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


def _case_empty_folder(tmp: Path):
    (tmp / "empty").mkdir()
    return ["--task", "images", "--data", str(tmp / "empty")], str(tmp / "empty")


def _case_corrupt_image(tmp: Path):
    root = _images(tmp / "broken", {"a": 3, "b": 3})
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return ["--task", "images", "--data", str(root)], str(root / "b" / "bad.png")


def _case_one_class(tmp: Path):
    root = _images(tmp / "one", {"only": 4})
    return ["--task", "images", "--data", str(root)], "only one class"


def _case_corrupt_npz(tmp: Path):
    path = tmp / "mnist.npz"
    path.write_bytes(b"not a zip file")
    return ["--task", "mnist", "--data", str(path)], str(path)


def _case_ucr_text_in_values(tmp: Path):
    root = tmp / "Toy"
    root.mkdir()
    rows = ["1\t0.1\t0.2\t0.3", "2\t0.3\t0.2\t0.1"] * 4
    (root / "Toy_TRAIN.tsv").write_text("\n".join(rows[:-1] + ["2\t0.3\toops\t0.1"]) + "\n")
    (root / "Toy_TEST.tsv").write_text("\n".join(rows) + "\n")
    return ["--task", "timeseries", "--data", str(root)], "Toy_TRAIN.tsv"


def _case_not_a_wav(tmp: Path):
    root = tmp / "wavs"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.wav").write_bytes(b"this is not audio")
    return ["--task", "audio", "--data", str(root)], ".wav"


def _case_sasrec_bad_line(tmp: Path):
    path = tmp / "actions.txt"
    path.write_text("1 1\n1 2\n1 3\n2 1\nnot-a-pair\n")
    return ["--task", "sasrec", "--data", str(path)], str(path)


def _case_translation_missing_path(tmp: Path):
    return ["--task", "translation", "--data", str(tmp / "no-such-corpus")], "not found"


def _case_yaml_unknown_key(tmp: Path):
    path = tmp / "run.yaml"
    path.write_text("task: digits\ntrain:\n  epochs: 1\n  learning_rate: 0.1\n")
    return ["--config", str(path)], "learning_rate"


def _case_yaml_wrong_type(tmp: Path):
    path = tmp / "run.yaml"
    path.write_text("task: digits\nmodel_config:\n  depth: deep\n")
    return ["--config", str(path)], "depth"


def _series_csv(tmp: Path, rows: int = 80, edits: dict[int, str] | None = None) -> Path:
    """A date + two channels CSV of ``rows`` rows, with ``edits`` replacing lines (0 = the header)."""
    lines = ["date,a,b"] + [f"2021-01-01 {i // 60:02d}:{i % 60:02d}:00,{i * 0.5},{(i * 7) % 11}" for i in range(rows)]
    for index, line in (edits or {}).items():
        lines[index] = line
    path = tmp / "series.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _forecast(path: Path) -> list[str]:
    return ["--task", "forecasting", "--data", str(path), "--data.input_length", "24", "--data.horizon", "8"]


def _case_forecast_text_cell(tmp: Path):
    path = _series_csv(tmp, edits={9: "2021-01-01 00:09:00,4.5,n/a?"})
    return _forecast(path), f"{path}: line 10, column 'b': 'n/a?' is not a number"


def _case_forecast_no_date_column(tmp: Path):
    path = _series_csv(tmp, edits={0: "when,a,b"})
    return _forecast(path), f"{path}: line 1: no date column 'date'"


def _case_forecast_too_short(tmp: Path):
    path = _series_csv(tmp, rows=30)
    return _forecast(path), f"{path}: 30 rows, shorter than input_length + horizon = 24 + 8 = 32"


def _case_forecast_nan_refused(tmp: Path):
    path = _series_csv(tmp, edits={41: "2021-01-01 00:40:00,,3"})
    return _forecast(path), f"{path}: line 42, column 'a': missing value (NaN)"


def _case_yaml_not_yaml(tmp: Path):  # PyYAML's own message spans several lines
    path = tmp / "run.yaml"
    path.write_text("task: digits\ntrain:\n  epochs: [1, 2\n")
    return ["--config", str(path)], f"config file {path} is not valid YAML"


def _case_empty_init(tmp: Path):  # an empty path is not the current directory
    return ["--task", "text-classification", "--init", ""], "--init is empty"


def _case_batch_larger_than_the_data(tmp: Path):  # refused by the trainer, after the data loaded
    return [*_forecast(_series_csv(tmp)), "--train.batch_size", "100000"], "no full batch of 100000"


def _case_freeze_matches_nothing(tmp: Path):
    return [*_forecast(_series_csv(tmp)), "--model", "dlinear", "--train.batch_size", "8", "--train.freeze", "nosuch"], "nosuch"


def _case_warmup_not_a_number(tmp: Path):  # NaN passed a "< 0" check, then int(round(nan)) raised deep inside
    return ["--train.warmup_epochs", "nan"], "TrainConfig.warmup_epochs must be a finite number >= 0, got nan"


def _case_yaml_section_not_a_mapping(tmp: Path):  # was a TypeError traceback
    path = tmp / "run.yaml"
    path.write_text("task: digits\ntrain: 5\n")
    return ["--config", str(path)], f"config file {path}: 'train' must be a mapping of its fields, got 5"


def _case_yaml_negative_report_examples(tmp: Path):  # was taken as 0
    path = tmp / "run.yaml"
    path.write_text("report_examples: -3\n")
    return ["--config", str(path)], "RunConfig.report_examples must be >= 0 (0: none), got -3"


CASES = {
    "empty-folder": _case_empty_folder,
    "corrupt-image": _case_corrupt_image,
    "one-class": _case_one_class,
    "corrupt-npz": _case_corrupt_npz,
    "ucr-text-in-values": _case_ucr_text_in_values,
    "not-a-wav": _case_not_a_wav,
    "sasrec-bad-line": _case_sasrec_bad_line,
    "translation-missing-path": _case_translation_missing_path,
    "yaml-unknown-key": _case_yaml_unknown_key,
    "yaml-wrong-type": _case_yaml_wrong_type,
    "forecast-text-cell": _case_forecast_text_cell,
    "forecast-no-date-column": _case_forecast_no_date_column,
    "forecast-too-short": _case_forecast_too_short,
    "forecast-nan-refused": _case_forecast_nan_refused,
    "yaml-not-yaml": _case_yaml_not_yaml,
    "empty-init": _case_empty_init,
    "batch-larger-than-the-data": _case_batch_larger_than_the_data,
    "freeze-matches-nothing": _case_freeze_matches_nothing,
    "warmup-not-a-number": _case_warmup_not_a_number,
    "yaml-section-not-a-mapping": _case_yaml_section_not_a_mapping,
    "yaml-negative-report-examples": _case_yaml_negative_report_examples,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    argv, culprit = CASES[case](tmp_path)
    out = tmp_path / "runs" / "should-not-exist"
    assert main(["train", *argv, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert culprit in err, err
    assert not out.exists(), f"a failed run left {out} behind"


def test_series_longer_than_the_model_takes_is_refused_at_predict(tmp_path, capsys):
    """A model with learned positions for T steps is handed a longer series: a clear line, exit 2."""
    root = tmp_path / "Toy"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split in ("TRAIN", "TEST"):
        rows = [f"{c}\t" + "\t".join(f"{v:.4f}" for v in rng.normal(c, 1.0, 12)) for c in (1, 2) for _ in range(6)]
        (root / f"Toy_{split}.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    tiny = ["--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--model.stem_channels", "0", "--train.batch_size", "4",
            "--train.progress", "false"]
    assert main(["train", "--task", "timeseries", "--data", str(root), "--epochs", "1", "--out", str(out), *tiny]) == 0
    capsys.readouterr()
    long_series = tmp_path / "long.npy"
    np.save(long_series, rng.normal(size=(1, 1, 20)).astype(np.float32))
    assert main(["predict", str(out), str(long_series)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(long_series) in err and "12" in err, err


def test_refused_options_leave_an_overwritten_run_as_it_was(tmp_path, capsys):
    """--overwrite names a finished run; options the trainer refuses must not touch it."""
    out = tmp_path / "run"
    argv = ["train", *_forecast(_series_csv(tmp_path)), "--model", "dlinear", "--epochs", "1", "--out", str(out),
            "--train.progress", "false", "--train.batch_size", "8"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main([*argv, "--overwrite", "--train.batch_size", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no full batch" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main(["train", "--resume", str(out), "--model", "patchtst"]) == 2  # a resumed run keeps its model
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(model: dlinear); --model patchtst would change it" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_run_directory_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a run")
    assert main(["train", *_forecast(_series_csv(tmp_path)), "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{out} is a file" in err, err
    assert out.read_text() == "not a run"


def test_checkpoint_with_nan_weights_is_refused(tmp_path, capsys):
    """NaN in a pretrained checkpoint would train to NaN silently: refused, naming the file."""
    pytest.importorskip("transformers")
    from safetensors.torch import load_file, save_file

    from tests.tasks.bert_fixtures import save_bert, write_text_data

    source = save_bert(tmp_path / "bert")
    weights = source / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("attention.self.query.weight"))
    tensors[name][0, :3] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--task", "text-classification", "--data", str(write_text_data(tmp_path / "r.tsv")),
                 "--init", str(source), "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{weights}: the checkpoint's weights hold 3 NaN" in err, err
    assert not out.exists()


def test_init_errors_name_the_source(tmp_path, capsys):
    """A model that cannot be built from --init SOURCE, or a run of another task: the line names SOURCE."""
    pytest.importorskip("transformers")
    import json

    from tests.tasks.bert_fixtures import save_bert, write_text_data

    data = str(write_text_data(tmp_path / "r.tsv"))
    source = save_bert(tmp_path / "bert")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "num_attention_heads": 5}))  # 32 wide: not divisible
    forecast_run = tmp_path / "forecast"
    assert main(["train", *_forecast(_series_csv(tmp_path)), "--model", "dlinear", "--epochs", "1", "--out",
                 str(forecast_run), "--train.batch_size", "8", "--train.progress", "false"]) == 0
    for init, culprit in ((source, "must be divisible by num_heads=5"), (forecast_run, "a run of model 'dlinear'")):
        capsys.readouterr()
        out = tmp_path / "run"
        assert main(["train", "--task", "text-classification", "--data", data, "--init", str(init), "--epochs", "1",
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--init {init}: " in err and culprit in err, err
        assert not out.exists()


@pytest.mark.parametrize("config", [{"tokenizer_class": "BertJapaneseTokenizer"}, {"model_max_length": "512"}])
def test_init_tokenizer_transformers_would_read_otherwise_is_refused(tmp_path, capsys, config):
    """A tokenizer attnlab cannot tokenise as transformers does (another tokenizer class, a bad
    model_max_length): one line naming tokenizer_config.json, exit 2, nothing written."""
    pytest.importorskip("transformers")
    import json

    from tests.tasks.bert_fixtures import save_bert, write_text_data

    source = save_bert(tmp_path / "bert")
    (source / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, **config}))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--task", "text-classification", "--data", str(write_text_data(tmp_path / "r.tsv")),
                 "--init", str(source), "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(source / "tokenizer_config.json") in err and next(iter(config)) in err, err
    assert not out.exists()


@pytest.mark.parametrize("where", ["file-parent", "proc"])
def test_a_run_directory_that_cannot_be_made_is_refused_before_training(tmp_path, capsys, where):
    if where == "file-parent":
        (tmp_path / "f").write_text("x")
        out, message = tmp_path / "f" / "run", f"{tmp_path / 'f'} is a file, not a folder"
    else:
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc here")
        out, message = Path("/proc/attnlab-nope/run"), "cannot create it in /proc"
    assert main(["train", "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_the_creatability_probe_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "run"
    # a freeze pattern that names nothing is refused by the trainer, after the probe made and removed a/b/run
    assert main(["train", "--out", str(out), "--epochs", "1", "--train.freeze", "no_such_parameter"]) == 2
    assert "no_such_parameter" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
