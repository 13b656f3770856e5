"""``--init RUN``: every task family starts from the weights of an earlier attnlab run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnlab.errors import CheckpointError
from attnlab.models.registry import create_model
from attnlab.run_config import resolve_config
from attnlab.tasks import task_spec
from attnlab.tasks.init_run import open_init


def _cli(*args):
    from attnlab.cli import main

    return main([*map(str, args)])


def _expect_error(capsys, *args, match):
    capsys.readouterr()
    assert _cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("source") / "digits"
    assert _cli("train", "--task", "digits", "--epochs", "1", "--seed", "3", "--out", out) == 0
    return out


def test_weights_come_from_the_run(digits_run):
    pretrained = open_init(task_spec("digits"), digits_run, model="vit-tiny")
    config = resolve_config({"task": "digits", "init": str(digits_run)})
    assert config.model == "vit-tiny" and config.model_config == {}  # the run's config, not the task default
    model = create_model("vit-tiny", **pretrained.model_fields)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    pretrained.load_weights(model)
    source = load_file(str(digits_run / "model.safetensors"))
    state = model.state_dict()
    assert set(state) == set(source)
    assert all(torch.equal(state[k], source[k]) for k in state)
    assert any(not torch.equal(fresh[k], source[k]) for k in state)  # it did change something
    assert pretrained.record["kind"] == "run" and pretrained.record["model"] == "vit-tiny"


def test_train_from_run_then_evaluate_without_it(tmp_path, digits_run, capsys):
    source = tmp_path / "copy"
    shutil.copytree(digits_run, source)
    out = tmp_path / "tuned"
    assert _cli("train", "--task", "digits", "--init", source, "--epochs", "1", "--out", out) == 0
    record = json.loads((out / "data.json").read_text())
    import hashlib

    assert record["init"]["sha256"] == hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    shutil.rmtree(source)  # the run directory is self-contained
    capsys.readouterr()
    assert _cli("evaluate", out, "--json") == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["test"]["accuracy"] <= 1.0


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path, digits_run, capsys):
    out = tmp_path / "run"
    _expect_error(capsys, "train", "--task", "digits", "--init", digits_run, "--model.dim", "32", "--out", out,
                  match="tensor 'cls_token' is (1, 1, 64) in the checkpoint but (1, 1, 32) in this model")
    assert not out.exists()


def test_another_model_is_named(tmp_path, digits_run, capsys):
    out = tmp_path / "run"
    _expect_error(capsys, "train", "--task", "digits", "--init", digits_run, "--model", "hybrid-cnn", "--out", out,
                  match="is a run of model 'vit-tiny', this run builds 'hybrid-cnn' (pass --model vit-tiny)")
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "not-a-run", "unfinished"])
def test_bad_run_sources_are_one_line(tmp_path, digits_run, capsys, case):
    source = tmp_path / "source"
    if case == "not-a-run":
        source.mkdir()
        (source / "notes.txt").write_text("hello")
        match = "not an attnlab run directory"
    elif case == "unfinished":
        shutil.copytree(digits_run, source)
        (source / "data.json").unlink()
        match = "not a finished attnlab run (data.json is missing)"
    else:
        match = "not an attnlab run directory"
    out = tmp_path / "run"
    _expect_error(capsys, "train", "--task", "digits", "--init", source, "--out", out, match=match)
    assert not out.exists()


def test_corrupt_weights_are_one_line(tmp_path, digits_run):
    source = tmp_path / "source"
    shutil.copytree(digits_run, source)
    (source / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        open_init(task_spec("digits"), source, model="vit-tiny")


def test_text_run_carries_its_tokenizer(tmp_path, capsys):
    lines = [f"{i % 2}\t{'good fun film' if i % 2 else 'dull boring plot'} number {i}" for i in range(60)]
    data = tmp_path / "reviews.tsv"
    data.write_text("\n".join(lines) + "\n")
    first, second = tmp_path / "first", tmp_path / "second"
    common = ("--task", "text-classification", "--data", data, "--epochs", "1",
              "--model.dim", "32", "--model.depth", "1")
    assert _cli("train", *common, "--out", first) == 0
    assert _cli("train", *common[:-4], "--init", first, "--out", second) == 0
    one, two = (json.loads((d / "data.json").read_text()) for d in (first, second))
    assert one["info"]["tokenizer"] == two["info"]["tokenizer"]
    assert json.loads((second / "data.json").read_text())["init"]["kind"] == "run"
    capsys.readouterr()
    assert _cli("predict", second, data, "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 60


def test_init_source_names_an_installed_checkpoint_package(tmp_path, monkeypatch):
    """A bare name resolves to an importable package's model/ folder; paths and unknown names stay as given."""
    from attnlab.tasks.init_run import resolve_source

    package = tmp_path / "site" / "my_ckpt_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (tmp_path / "site" / "no_model_pkg").mkdir()
    (tmp_path / "site" / "no_model_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert resolve_source("my-ckpt-pkg") == package / "model"  # the distribution's spelling, dashes
    assert resolve_source("my_ckpt_pkg") == package / "model"
    assert resolve_source("no_model_pkg") == Path("no_model_pkg")  # a package without model/: a path as given
    assert resolve_source("surely-not-installed-xyz") == Path("surely-not-installed-xyz")
    local = tmp_path / "my-ckpt-pkg"
    local.mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_source("my-ckpt-pkg") == Path("my-ckpt-pkg")  # an existing folder wins over a package
    assert resolve_source(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"


def test_an_integer_tensor_in_a_float_slot_is_refused(tmp_path, digits_run, capsys):
    from safetensors.torch import save_file

    source = tmp_path / "copy"
    shutil.copytree(digits_run, source)
    tensors = load_file(str(source / "model.safetensors"))
    tensors["cls_token"] = torch.randint(-3, 3, tensors["cls_token"].shape)  # load_state_dict would cast it silently
    save_file(tensors, str(source / "model.safetensors"))
    out = tmp_path / "run"
    _expect_error(capsys, "train", "--task", "digits", "--init", source, "--out", out,
                  match="tensor 'cls_token' is int64 (integer) in the checkpoint but float32 (floating-point) in this model")
    assert not out.exists()
