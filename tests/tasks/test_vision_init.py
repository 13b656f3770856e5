"""``--init`` for the vision tasks: a Hugging Face ViT or an earlier ViT run, at another grid and channel count."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml

from attnlab.layers.positional import resample_abs_pos_embed
from attnlab.models.registry import create_model
from attnlab.tasks.vision import adapt_input_conv, open_vit_checkpoint
from tests.tasks.vit_fixtures import image_folder as _image_folder, save_vit

transformers = pytest.importorskip("transformers")


def _cli(*args):
    from attnlab.cli import main

    return main([*map(str, args)])


def _expect_error(capsys, *args, match):
    capsys.readouterr()
    assert _cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def _build(pretrained, *, image_size, in_channels, num_classes=3):
    torch.manual_seed(1)
    model = create_model("vit-tiny", image_size=image_size, in_channels=in_channels, num_classes=num_classes,
                         **pretrained.model_fields)
    pretrained.load_weights(model)
    return model.eval()


@pytest.mark.parametrize("classifier", [True, False])
def test_same_grid_features_match_transformers(tmp_path, classifier):
    source = save_vit(tmp_path / "vit", classifier=classifier)
    pretrained = open_vit_checkpoint(source)
    ours = _build(pretrained, image_size=(16, 16), in_channels=3)
    hf = (transformers.ViTForImageClassification if classifier else transformers.ViTModel).from_pretrained(source).eval()
    encoder = hf.vit if classifier else hf
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), encoder(pixel_values=x).last_hidden_state, atol=1e-5, rtol=0)
    assert ours.head.weight.shape == (3, 32)  # a new head, sized by the data
    assert pretrained.record["source_grid"] == [4, 4] and pretrained.record["grid"] == [4, 4]
    assert "in_channels" not in pretrained.record


def test_another_grid_resamples_the_table_and_keeps_the_class_token(tmp_path):
    source = save_vit(tmp_path / "vit", image_size=28, patch_size=4)  # a 7x7 grid
    pretrained = open_vit_checkpoint(source)
    hf = transformers.ViTModel.from_pretrained(source, add_pooling_layer=False)
    table = hf.embeddings.position_embeddings.detach()  # (1, 1 + 49, 32)
    for size, grid in (((8, 8), (2, 2)), ((48, 40), (12, 10))):
        model = _build(pretrained, image_size=size, in_channels=3)
        assert model.pos_embed.shape == (1, 1 + grid[0] * grid[1], 32)
        torch.testing.assert_close(model.pos_embed.detach(), resample_abs_pos_embed(table, grid, (7, 7)), atol=0, rtol=0)
        assert torch.equal(model.pos_embed[:, 0], table[:, 0])
        assert torch.equal(model.cls_token.detach(), hf.embeddings.cls_token.detach())
        assert pretrained.record["source_grid"] == [7, 7] and pretrained.record["grid"] == list(grid)


def test_input_conv_adaptation_is_timm_s():
    torch.manual_seed(0)
    rgb = torch.randn(8, 3, 4, 4)
    assert adapt_input_conv(rgb, 3) is rgb
    torch.testing.assert_close(adapt_input_conv(rgb, 1), rgb.sum(1, keepdim=True))
    four = adapt_input_conv(rgb, 4)  # timm: repeat the channels cyclically, scale by 3 / 4
    torch.testing.assert_close(four, torch.cat([rgb, rgb[:, :1]], 1) * 0.75)
    grey = torch.randn(8, 1, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(adapt_input_conv(grey, 3), grey.expand(8, 3, 3, 3) / 3)
    assert adapt_input_conv(rgb.half(), 1).dtype == torch.float16


def test_an_rgb_checkpoint_sees_a_grey_image_as_r_equals_g_equals_b(tmp_path):
    """Summing the patch kernel over channels: the 1-channel model's features on an image are the
    RGB checkpoint's on that image repeated on all three channels."""
    source = save_vit(tmp_path / "vit")
    pretrained = open_vit_checkpoint(source)
    grey = _build(pretrained, image_size=(16, 16), in_channels=1)
    hf = transformers.ViTModel.from_pretrained(source, add_pooling_layer=False).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(grey.forward_features(x), hf(pixel_values=x.expand(2, 3, 16, 16)).last_hidden_state,
                                   atol=1e-5, rtol=0)
    assert pretrained.record["in_channels"] == [3, 1]


@pytest.fixture(scope="module")
def digits_npy(tmp_path_factory):
    from sklearn.datasets import load_digits

    path = tmp_path_factory.mktemp("inputs") / "digit.npy"
    np.save(path, load_digits().images[0])  # (8, 8) in 0..16
    return path


def test_hf_init_on_digits_then_the_run_needs_no_source(tmp_path, capsys, digits_npy):
    source = save_vit(tmp_path / "vit")  # RGB 16x16, patch 4: a 4x4 grid; digits are grey 8x8: 2x2
    out = tmp_path / "run"
    assert _cli("train", "--task", "digits", "--init", source, "--epochs", "1", "--out", out,
                "--train.progress", "false") == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    train = config["train"]
    assert (train["lr"], train["warmup_ratio"], train["weight_decay"], train["epochs"]) == (5e-4, 0.1, 0.05, 1)
    assert config["objective"]["label_smoothing"] == 0.1
    assert config["model_config"]["dim"] == 32 and config["model_config"]["stem_channels"] == 0  # the checkpoint's
    init = json.loads((out / "data.json").read_text())["init"]
    assert init["sha256"] == hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    assert (init["kind"], init["model_type"], init["weights"]) == ("huggingface", "vit", "model.safetensors")
    assert (init["source_grid"], init["grid"], init["in_channels"]) == ([4, 4], [2, 2], [3, 1])
    assert json.loads((out / "init" / "config.json").read_text())["model_type"] == "vit"
    shutil.rmtree(source)  # the run directory is self-contained
    capsys.readouterr()
    assert _cli("evaluate", out, "--json") == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["test"]["accuracy"] <= 1.0
    assert _cli("predict", out, digits_npy, "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["class"] in [str(c) for c in range(10)]
    assert _cli("explain", out, digits_npy, "-o", tmp_path / "explain.html") == 0
    assert _cli("train", "--resume", out, "--epochs", "2") == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("source") / "digits"
    assert _cli("train", "--task", "digits", "--epochs", "1", "--seed", "3", "--out", out, "--model.dim", "32",
                "--model.depth", "2", "--model.stem_channels", "8", "--train.progress", "false") == 0
    return out


@pytest.mark.parametrize("act", ["gelu_new", "gelu_pytorch_tanh"])
def test_a_tanh_gelu_checkpoint_starts_a_run_with_its_activation(tmp_path, act):
    """``--init`` refused hidden_act gelu_new / gelu_pytorch_tanh ("gelu only"); the model now
    takes the tanh GELU, and its features match transformers' where the two GELUs differ."""
    source = save_vit(tmp_path / "vit", hidden_act=act, initializer_range=0.5)
    pretrained = open_vit_checkpoint(source)
    assert pretrained.model_fields["activation"] == "gelu_tanh"
    ours = _build(pretrained, image_size=(16, 16), in_channels=3)
    hf = transformers.ViTModel.from_pretrained(source, add_pooling_layer=False).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = hf(pixel_values=x).last_hidden_state
        torch.testing.assert_close(ours.forward_features(x), want, atol=1e-5, rtol=0)
        exact = transformers.ViTModel(transformers.ViTConfig(**{**hf.config.to_dict(), "hidden_act": "gelu"}),
                                      add_pooling_layer=False)
        exact.load_state_dict(hf.state_dict())
        assert (exact.eval()(pixel_values=x).last_hidden_state - want).abs().max() > 1e-4


def test_a_run_saved_before_the_activation_field_loads(tmp_path, digits_run):
    """config.yaml of runs from before ``activation`` existed has no such field: the exact GELU they trained with."""
    from attnlab.run import load_run

    old = tmp_path / "old"
    shutil.copytree(digits_run, old)
    config = yaml.safe_load((old / "config.yaml").read_text())
    assert config["model_config"].pop("activation") == "gelu"
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (_, model, _), (_, saved, _) = load_run(old), load_run(digits_run)
    assert model.config.activation == "gelu" and model.blocks[0].mlp.activation == "gelu"
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), saved(x), atol=0, rtol=0)


def test_a_run_of_the_same_task_keeps_its_head(digits_run):
    """Another task's run gets a new head (its classes are not these); the same task's keeps it."""
    from attnlab.tasks import task_spec
    from attnlab.tasks.init_run import open_init

    torch.manual_seed(0)
    for task, kept in (("digits", True), ("mnist", False)):
        pretrained = open_init(task_spec(task), digits_run, model="vit-tiny")
        model = create_model("vit-tiny", **pretrained.model_fields)
        fresh = model.head.weight.detach().clone()
        pretrained.load_weights(model)
        source = json.loads((digits_run / "data.json").read_text())
        assert source["task"] == "digits" and pretrained.record["head"] == ("kept" if kept else "new")
        assert torch.equal(model.head.weight.detach(), fresh) is not kept


def test_a_digits_run_starts_an_rgb_images_run_at_another_grid(tmp_path, digits_run, capsys):
    """vit-tiny on grey 8x8 digits (patch 2, a 4x4 grid, a 1-channel stem) -> RGB 16x16 images (8x8)."""
    from safetensors.torch import load_file

    data = _image_folder(tmp_path / "colours")
    out = tmp_path / "run"
    assert _cli("train", "--task", "images", "--data", data, "--data.image_size", "[16, 16]", "--init", digits_run,
                "--epochs", "1", "--train.batch_size", "8", "--out", out, "--train.progress", "false") == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "vit-tiny" and config["model_config"]["image_size"] == [16, 16]
    assert config["model_config"]["in_channels"] == 3 and config["model_config"]["num_classes"] == 3
    assert config["train"]["lr"] == 2.5e-4 and config["train"]["epochs"] == 1
    init = json.loads((out / "data.json").read_text())["init"]
    assert (init["kind"], init["model"], init["source_grid"], init["grid"], init["in_channels"], init["head"]) == (
        "run", "vit-tiny", [4, 4], [8, 8], [1, 3], "new")
    from attnlab.run import load_run

    source, (_, tuned_model, _) = load_file(str(digits_run / "model.safetensors")), load_run(out)
    tuned = tuned_model.state_dict()
    assert tuned["pos_embed"].shape == (1, 1 + 64, 32) and tuned["stem.0.weight"].shape == (8, 3, 3, 3)
    assert tuned["head.weight"].shape == (3, 32)
    # one epoch moved the weights, but they started from the run's (a random start would be far off)
    assert (tuned["blocks.1.mlp.fc2.weight"] - source["blocks.1.mlp.fc2.weight"]).abs().max() < 0.05
    capsys.readouterr()
    assert _cli("evaluate", out, "--json") == 0


@pytest.mark.parametrize("case", ["missing", "not-a-checkpoint", "pickle-only", "model-type", "activation",
                                  "corrupt-weights", "missing-tensor", "patch-size"])
def test_bad_sources_are_one_line_and_write_nothing(tmp_path, capsys, case):
    source = tmp_path / "vit"
    extra = ()
    if case == "missing":
        match = f"{source}: checkpoint not found"
    elif case == "not-a-checkpoint":
        source.mkdir()
        (source / "notes.txt").write_text("hello")
        match = f"{source / 'config.json'}: missing"
    elif case == "pickle-only":
        save_vit(source)
        (source / "model.safetensors").rename(source / "pytorch_model.bin")  # never unpickled
        match = f"{source / 'pytorch_model.bin'}: pickled weights are refused"
    elif case == "model-type":
        transformers.BertModel(transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=8)).save_pretrained(source)
        match = f"{source / 'config.json'}: model_type 'bert' is not supported"
    elif case == "activation":
        save_vit(source, hidden_act="silu")
        match = f"{source / 'config.json'}: hidden_act 'silu' is not supported"
    elif case == "corrupt-weights":
        save_vit(source)
        (source / "model.safetensors").write_bytes(b"not safetensors")
        match = f"{source / 'model.safetensors'}: not a readable safetensors file"
    elif case == "missing-tensor":
        save_vit(source)
        config = json.loads((source / "config.json").read_text())
        (source / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
        match = "tensor 'vit.encoder.layer.2.layernorm_before.weight' is missing"
    else:  # the kernel cannot change size: named with both shapes
        save_vit(source)
        extra = ("--model.patch_size", "2")
        match = "tensor 'patch_embed.weight' is (32, 1, 4, 4) in the checkpoint but (32, 1, 2, 2) in this model"
    out = tmp_path / "run"
    _expect_error(capsys, "train", "--task", "digits", "--init", source, *extra, "--out", out, match=match)
    assert not out.exists()


def test_train_help_says_what_init_does_for_images(capsys):
    with pytest.raises(SystemExit):
        _cli("train", "--help")
    text = " ".join(capsys.readouterr().out.split())
    for words in ("Hugging Face ViT", "position table is resampled", "adapt_input_conv", "digits: lr 5e-4, 15 epochs"):
        assert words in text, words
    assert math.isclose(5e-4 * 4, 2e-3)  # a quarter of digits' from-scratch lr


def test_an_images_run_keeps_its_head_only_for_the_same_classes(tmp_path):
    """``--init`` from an image-folder run: a folder of the same classes keeps its head (more
    training on them); a folder of other classes, or as many classes under other names, gets a new
    head sized by its classes (the first was a shape error on head.weight, the second silently read
    the old classes' rows as the new ones)."""
    from safetensors.torch import load_file

    source = tmp_path / "source"
    common = ("--epochs", "1", "--model.dim", "16", "--model.depth", "1", "--model.stem_channels", "8",
              "--train.batch_size", "8", "--train.progress", "false", "--data.image_size", "[16, 16]")
    assert _cli("train", "--task", "images", "--data", _image_folder(tmp_path / "rgb"), "--out", source, *common) == 0
    head = load_file(str(source / "model.safetensors"))["head.weight"]  # (3, 16)
    two = _image_folder(tmp_path / "two")
    shutil.rmtree(two / "blue")
    renamed = _image_folder(tmp_path / "renamed")
    for old, new in (("red", "cyan"), ("green", "magenta"), ("blue", "yellow")):
        (renamed / old).rename(renamed / new)
    for data, kept, classes in ((tmp_path / "rgb", True, 3), (two, False, 2), (renamed, False, 3)):
        out = tmp_path / f"tuned-{data.name}"
        # a frozen head stays where --init put it
        assert _cli("train", "--task", "images", "--data", data, "--init", source, "--out", out, "--train.freeze", "head",
                    *common) == 0
        assert json.loads((out / "data.json").read_text())["init"]["head"] == ("kept" if kept else "new")
        tuned = load_file(str(out / "model.safetensors"))["head.weight"]
        assert tuned.shape == (classes, 16)
        assert torch.equal(tuned, head) is kept
