"""``--init`` from a Hugging Face ViT normalises the data as the checkpoint's image processor did.

The weights were trained on ``(p * rescale_factor - image_mean) / image_std``; normalising with the
data's own statistics instead feeds them inputs on another scale. timm (``resolve_data_config``) and
transformers (the checkpoint's image processor) both take the checkpoint's normalisation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnlab.data.base import ImageSpec
from attnlab.models.registry import create_model
from attnlab.tasks.base import Pretrained
from attnlab.tasks.vision import open_vit_checkpoint
from tests.tasks.vit_fixtures import image_folder, save_vit

transformers = pytest.importorskip("transformers")

RGB = {"image_mean": [0.2, 0.4, 0.6], "image_std": [0.3, 0.2, 0.1]}  # unlike any data's statistics


def _cli(*args):
    from attnlab.cli import main

    return main([*map(str, args)])


def _build(pretrained, *, image_size, in_channels, num_classes=3):
    torch.manual_seed(1)
    model = create_model("vit-tiny", image_size=image_size, in_channels=in_channels, num_classes=num_classes,
                         **pretrained.model_fields)
    pretrained.load_weights(model)
    return model.eval()


def _load(task, data, pretrained, **options):
    from attnlab.tasks import load_task

    return load_task(task, data, seed=0, **options, **pretrained.data_options)


def test_rgb_images_get_the_processor_s_inputs(tmp_path):
    """Each training input is what ViTImageProcessor makes of the same file, and the checkpoint's
    features on it are transformers' on the processor's pixel_values."""
    from PIL import Image

    source = save_vit(tmp_path / "vit", processor={**RGB, "do_resize": False})
    pretrained = open_vit_checkpoint(source)
    assert pretrained.record["normalisation"]["file"] == "preprocessor_config.json"
    folder = image_folder(tmp_path / "colours")
    data = _load("images", folder, pretrained, image_size=[16, 16], lazy=False)
    np.testing.assert_allclose(data.spec.mean, RGB["image_mean"], rtol=1e-12)
    np.testing.assert_allclose(data.spec.std, RGB["image_std"], rtol=1e-12)
    processor = transformers.ViTImageProcessor.from_pretrained(source)
    files = sorted(folder.glob("*/*.png"))
    x, _ = data.train[0]
    pixels = processor(images=np.asarray(Image.open(files[int(data.train.indices[0])])), return_tensors="pt").pixel_values
    torch.testing.assert_close(x, pixels[0], atol=1e-6, rtol=0)
    model = _build(pretrained, image_size=(16, 16), in_channels=3)
    hf = transformers.ViTModel.from_pretrained(source, add_pooling_layer=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x[None]), hf(pixel_values=pixels).last_hidden_state,
                                   atol=1e-5, rtol=0)


def test_grey_data_under_an_rgb_checkpoint_is_seen_as_r_equals_g_equals_b(tmp_path):
    """Digits (grey) under an RGB checkpoint of mean = std = 0.5 on every channel (HF's default): the
    summed patch kernel on the normalised digit gives transformers' features on the digit repeated
    on R, G and B and put through the processor: exactly the pretrained inputs' scale."""
    from sklearn.datasets import load_digits

    source = save_vit(tmp_path / "vit", processor={"do_resize": False})
    pretrained = open_vit_checkpoint(source)
    data = _load("digits", None, pretrained)
    assert (data.spec.mean, data.spec.std) == ([0.5], [0.5])
    x, _ = data.test[0]  # (1, 8, 8)
    raw = load_digits().images[int(data.test.indices[0])] / 16 * 255  # the digit as an 8-bit picture
    processor = transformers.ViTImageProcessor.from_pretrained(source)
    rgb = processor(images=np.repeat(raw[..., None], 3, axis=-1), return_tensors="pt").pixel_values  # (1, 3, 8, 8)
    torch.testing.assert_close(x[None].expand(1, 3, 8, 8), rgb.float(), atol=1e-6, rtol=0)
    model = create_model("vit-tiny", image_size=(16, 16), in_channels=1, num_classes=3, **pretrained.model_fields)
    pretrained.load_weights(model)
    hf = transformers.ViTModel.from_pretrained(source, add_pooling_layer=False).eval()
    up = torch.nn.functional.interpolate(x[None], scale_factor=2, mode="nearest")  # 16x16, the checkpoint's size
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_features(up), hf(pixel_values=up.expand(1, 3, 16, 16)).last_hidden_state,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", ["digits", "mnist"])
def test_grey_data_takes_the_channels_mean(tmp_path, task):
    """An RGB checkpoint's three values on one-channel data: their mean (documented in docs/tasks.md)."""
    source = save_vit(tmp_path / "vit", processor=RGB)
    pretrained = open_vit_checkpoint(source)
    options = {}
    data_path = None
    if task == "mnist":
        rng = np.random.default_rng(0)
        data_path = tmp_path / "mnist.npz"
        np.savez(data_path, x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 2,
                 x_test=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8), y_test=np.arange(10) % 2)
        options = {"val_size": 10}
    data = _load(task, data_path, pretrained, **options)
    np.testing.assert_allclose(data.spec.mean, [0.4], rtol=1e-12)
    np.testing.assert_allclose(data.spec.std, [0.2], rtol=1e-12)


def test_the_fine_tuned_run_evaluates_predicts_and_explains_with_the_checkpoint_s_spec(tmp_path, capsys):
    from sklearn.datasets import load_digits

    from attnlab.run import load_run
    from attnlab.tasks import task_spec
    from attnlab.tasks.init_run import open_init
    from attnlab.tasks.vision import explain_image

    source = save_vit(tmp_path / "vit", processor=RGB)
    out = tmp_path / "run"
    assert _cli("train", "--task", "digits", "--init", source, "--epochs", "1", "--out", out, "--train.progress", "false") == 0
    record = json.loads((out / "data.json").read_text())
    np.testing.assert_allclose(record["spec"]["mean"], [0.4], rtol=1e-12)
    np.testing.assert_allclose(record["spec"]["std"], [0.2], rtol=1e-12)
    norm = record["init"]["normalisation"]
    assert (norm["file"], norm["image_mean"], norm["image_std"], norm["do_rescale"], norm["do_normalize"]) == (
        "preprocessor_config.json", RGB["image_mean"], RGB["image_std"], True, True)
    assert (out / "init" / "preprocessor_config.json").is_file()
    import shutil

    shutil.rmtree(source)
    capsys.readouterr()
    assert _cli("evaluate", out, "--json") == 0  # the test split normalised as in training: the same figures
    evaluated = json.loads(capsys.readouterr().out)["test"]
    trained = json.loads((out / "metrics.json").read_text())["test"]
    assert evaluated["accuracy"] == trained["accuracy"]
    assert evaluated["loss"] == pytest.approx(trained["loss"], rel=1e-6, abs=0)
    digit = tmp_path / "digit.npy"
    np.save(digit, load_digits().images[5])  # 0..16
    x = torch.from_numpy((load_digits().images[5] / 16 - 0.4) / 0.2).float()[None]  # (1, 8, 8), by hand
    _, model, run_record = load_run(out)
    with torch.no_grad():
        probs = torch.softmax(model(x[None]), dim=-1)[0]
    capsys.readouterr()
    assert _cli("predict", out, digit, "--json") == 0
    predicted = json.loads(capsys.readouterr().out)[0]
    assert predicted["class"] == str(int(probs.argmax()))
    assert predicted["score"] == pytest.approx(float(probs.max()), abs=1e-6)
    example = explain_image(model, run_record, str(digit))
    torch.testing.assert_close(example.item[0], x, atol=1e-6, rtol=0)
    assert ImageSpec.from_dict(run_record["spec"]).mean == record["spec"]["mean"]
    assert _cli("train", "--resume", out, "--epochs", "2") == 0  # resumed on the same inputs
    assert json.loads((out / "data.json").read_text())["spec"] == record["spec"]
    # --init from this run (an attnlab run SOURCE) normalises as it did (it went back to the data's own statistics,
    # 0.305 / 0.376 on digits, so the weights saw inputs on another scale), and says so in data.json
    assert open_init(task_spec("digits"), out, model="vit-tiny").data_options["norm_stats"]["mean"] == record["spec"]["mean"]
    second = tmp_path / "second"
    assert _cli("train", "--task", "digits", "--init", out, "--epochs", "1", "--out", second, "--train.progress", "false") == 0
    chained = json.loads((second / "data.json").read_text())
    assert chained["spec"]["mean"] == record["spec"]["mean"] and chained["spec"]["std"] == record["spec"]["std"]
    assert chained["init"]["normalisation"]["mean"] == record["spec"]["mean"]
    capsys.readouterr()
    assert _cli("evaluate", second, "--json") == 0
    assert json.loads(capsys.readouterr().out)["test"]["accuracy"] == json.loads((second / "metrics.json").read_text())["test"]["accuracy"]


def test_shards_are_decoded_with_the_checkpoint_s_statistics(tmp_path):
    """Shards carry the spec they were written with (the folder's statistics); under ``--init`` the
    checkpoint's replace them, as for the folder itself."""
    from attnlab.data.image_shards import write_image_shards

    pretrained = open_vit_checkpoint(save_vit(tmp_path / "vit", processor=RGB))
    folder = image_folder(tmp_path / "colours")
    write_image_shards(_load("images", folder, Pretrained(), image_size=[16, 16], lazy=True), tmp_path / "shards")
    shards, direct = (_load("images", data, pretrained, **options) for data, options in
                      ((tmp_path / "shards", {}), (folder, {"image_size": [16, 16], "lazy": True})))
    assert shards.spec.to_dict() == direct.spec.to_dict()
    np.testing.assert_allclose(shards.spec.mean, RGB["image_mean"], rtol=1e-12)
    torch.testing.assert_close(next(iter(shards.test))[0], direct.test[0][0], atol=0, rtol=0)


def test_a_checkpoint_without_a_processor_keeps_the_data_s_statistics(tmp_path):
    from attnlab.tasks import load_task

    pretrained = open_vit_checkpoint(save_vit(tmp_path / "vit"))
    assert "normalisation" not in pretrained.record and pretrained.data_options == {}
    own = load_task("digits", None, seed=0)
    assert _load("digits", None, pretrained).spec.to_dict() == own.spec.to_dict()


@pytest.mark.parametrize("entries, match", [
    ({"image_std": [0.5, 0.0, 0.5]}, "image_std must be a number or 3 positive finite numbers"),
    ({"image_mean": [0.5, 0.5]}, "image_mean must be a number or 3 finite numbers"),
    ({"rescale_factor": "1/255"}, "rescale_factor must be a number"),
    ({"do_normalize": "yes"}, "do_normalize must be true or false"),
])
def test_a_bad_processor_config_is_one_line_and_writes_nothing(tmp_path, capsys, entries, match):
    source = save_vit(tmp_path / "vit", processor={})
    path = source / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **entries}))
    out = tmp_path / "run"
    capsys.readouterr()
    assert _cli("train", "--task", "digits", "--init", source, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}: {match}" in err, err
    assert not out.exists()


@pytest.mark.parametrize("processor", [True, False])
def test_norm_stats_given_beside_init(tmp_path, caplog, processor):
    """--data.norm_stats under --init: a checkpoint's preprocessor_config.json replaces it (a warning
    names the flag: it is not dropped silently); a checkpoint without one leaves it in force."""
    import logging

    from attnlab.run_config import resolve_config, task_data_for, warn_replaced_options

    source = save_vit(tmp_path / "vit", processor={**RGB, "do_resize": False} if processor else None)
    given = {"mean": [0.25], "std": [0.5]}
    config = resolve_config({"task": "digits", "data_options": {"norm_stats": given}})
    pretrained = open_vit_checkpoint(source)
    with caplog.at_level(logging.WARNING, logger="attnlab.run_config"):
        warn_replaced_options(config, pretrained)  # what training does before reading its data
        data = task_data_for(config, pretrained)
    if processor:  # digits are grey: the RGB checkpoint's values become their mean
        np.testing.assert_allclose(data.spec.mean + data.spec.std, [0.4, 0.2], rtol=1e-12)
        assert "--data.norm_stats" in caplog.text and "replaces it" in caplog.text
    else:
        assert (data.spec.mean, data.spec.std) == ([0.25], [0.5]) and caplog.text == ""
