"""The time-series Transformer and its task: shapes, config errors, an end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.errors import ConfigError, DataError
from attnlab.explain.capture import capture
from attnlab.models import create_model


@pytest.mark.parametrize("pos_embed", ["learned", "sincos", "rope", "alibi", "relative", "none"])
@pytest.mark.parametrize("patch_size, pooling, stem, stem_norm",
                         [(1, "cls", 0, "batch"), (4, "mean", 8, "batch"), (5, "cls", 8, "instance"), (1, "cls_mean", 8, "group")])
def test_shapes_and_attention_capture(pos_embed, patch_size, pooling, stem, stem_norm):
    model = create_model("ts-transformer", seq_len=22, in_channels=2, num_classes=3, patch_size=patch_size, pooling=pooling,
                         stem_channels=stem, stem_norm=stem_norm, pos_embed=pos_embed, dim=16, depth=2, num_heads=2).eval()
    x = torch.randn(3, 2, 22)
    tokens = -(-22 // patch_size) + (pooling in ("cls", "cls_mean"))
    assert model.num_patches + model.num_prefix_tokens == tokens
    assert model.forward_features(x).shape == (3, tokens, 16)
    maps = capture(model, x)
    assert model(x).shape == (3, 3) and torch.isfinite(maps.output).all()
    assert len(maps.maps) == 2 and maps.maps[0].shape == (3, 2, tokens, tokens)
    spans = model.token_spans()
    assert spans[0] == (0, patch_size) and spans[-1][1] == 22 and len(spans) == model.num_patches


@pytest.mark.parametrize("patch_size, pooling", [(1, "flatten"), (2, "cls"), (1, "mean")])
def test_encoder_stem_pools_tokens_and_spans(patch_size, pooling):
    model = create_model("ts-transformer", seq_len=22, in_channels=2, num_classes=3, patch_size=patch_size, pooling=pooling,
                         stem_widths=(8, 12, 16), stem_kernels=(5, 3, 3), stem_norm="instance", stem_dropout=0.2,
                         dim=16, depth=1, num_heads=2).eval()
    x = torch.randn(3, 2, 22)
    steps = 22 // 4  # two max-poolings of 2
    assert model.num_patches == -(-steps // patch_size)
    tokens = model.num_patches + model.num_prefix_tokens
    maps = capture(model, x)
    assert model(x).shape == (3, 3) and maps.maps[0].shape == (3, 2, tokens, tokens)
    spans = model.token_spans()
    assert spans[0] == (0, 4 * patch_size) and len(spans) == model.num_patches and spans[-1][1] <= 22


def test_encoder_stem_and_flatten_head_match_float64_math():
    """The stem is the Encoder's blocks: conv (same padding) -> instance norm over time (eps 1e-3,
    per-channel scale and shift) -> PReLU -> max pool 2 (all but the last block); the flatten head
    reads every step token with its own weights."""
    import torch.nn.functional as F

    model = create_model("ts-transformer", seq_len=20, in_channels=2, num_classes=3, stem_widths=(6, 10), stem_kernels=(5, 3),
                         stem_norm="instance", stem_dropout=0.3, pooling="flatten", dim=8, depth=1, num_heads=2).double().eval()
    with torch.no_grad():
        for m in model.stem.modules():  # non-trivial affine and PReLU slopes
            if isinstance(m, (torch.nn.InstanceNorm1d, torch.nn.PReLU)):
                for p in m.parameters():
                    p.uniform_(-1.5, 1.5)
    x = torch.randn(4, 2, 20, dtype=torch.float64)
    convs = [m for m in model.stem.modules() if isinstance(m, torch.nn.Conv1d)]
    norms = [m for m in model.stem.modules() if isinstance(m, torch.nn.InstanceNorm1d)]
    prelus = [m for m in model.stem.modules() if isinstance(m, torch.nn.PReLU)]
    h = x
    for i, (conv, norm, prelu) in enumerate(zip(convs, norms, prelus)):
        h = F.conv1d(h, conv.weight, padding=conv.kernel_size[0] // 2)
        h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-3)
        h = h * norm.weight[:, None] + norm.bias[:, None]
        h = torch.where(h >= 0, h, prelu.weight[:, None] * h)
        if i == 0:
            h = torch.maximum(h[..., 0::2], h[..., 1::2])
    torch.testing.assert_close(model.stem(x), h, rtol=1e-10, atol=1e-10)
    tokens = model.forward_features(x)  # (B, 10, 8)
    expected = tokens.reshape(4, -1) @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_padding_does_not_leak_across_series():
    model = create_model("ts-transformer", seq_len=10, patch_size=4, dim=16, num_heads=2).eval()
    x = torch.randn(2, 1, 10)
    torch.testing.assert_close(model(x)[:1], model(x[:1]))


def test_config_errors_and_input_check():
    with pytest.raises(ConfigError, match="pooling must be one of"):
        create_model("ts-transformer", pooling="max")
    with pytest.raises(ConfigError, match="stem_norm must be one of"):
        create_model("ts-transformer", stem_norm="layer")
    with pytest.raises(ConfigError, match="pos_embed must be one of"):
        create_model("ts-transformer", pos_embed="xpos")
    with pytest.raises(ConfigError, match="patch_size=200 is longer than seq_len=96"):
        create_model("ts-transformer", patch_size=200)
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        create_model("ts-transformer", dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="dropout must be in"):
        create_model("ts-transformer", dropout=1.5)
    with pytest.raises(ConfigError, match="stem_channels .* and stem_widths .* exclude each other"):
        create_model("ts-transformer", stem_channels=8, stem_widths=(8, 8), stem_kernels=(3, 3))
    with pytest.raises(ConfigError, match="must be positive and as many"):
        create_model("ts-transformer", stem_widths=(8, 8), stem_kernels=(3, 3, 3))
    with pytest.raises(ConfigError, match="pool by 8, more than seq_len=6"):
        create_model("ts-transformer", seq_len=6, stem_widths=(4, 4, 4, 4), stem_kernels=(3, 3, 3, 3))
    with pytest.raises(ConfigError, match="patch_size=4 is longer than seq_len=12 pooled by the stem to 3 steps"):
        create_model("ts-transformer", seq_len=12, patch_size=4, stem_widths=(4, 4, 4), stem_kernels=(3, 3, 3))
    model = create_model("ts-transformer", seq_len=12)
    with pytest.raises(ValueError, match=r"expects series \(B, 1, 12\), got shape \(2, 1, 13\)"):
        model(torch.randn(2, 1, 13))


def _synthetic(root: Path, n_train: int = 48, n_test: int = 40, length: int = 32, seed: int = 0) -> Path:
    """Sine (label 5) vs square wave (label -3), random frequency, phase, amplitude and noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(length)
    for split, n in (("TRAIN", n_train), ("TEST", n_test)):
        lines = []
        for i in range(n):
            label = (-3, 5)[i % 2]
            wave = np.sin(2 * np.pi * rng.uniform(1.5, 3) * t / length + rng.uniform(0, 2 * np.pi))
            wave = np.sign(wave) if label == -3 else wave
            values = rng.uniform(0.5, 2) * wave + rng.uniform(-1, 1) + 0.1 * rng.normal(size=length)
            lines.append("\t".join([str(label)] + [f"{v:.5f}" for v in values]))
        (root / f"Waves_{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def waves_run(tmp_path_factory):
    from attnlab.cli import main

    tmp = tmp_path_factory.mktemp("ts")
    data = _synthetic(tmp / "Waves")
    out = tmp / "waves-run"
    argv = ["train", "--task", "timeseries", "--data", str(data), "--out", str(out), "--epochs", "25",
            "--model.dim", "32", "--model.depth", "1", "--model.num_heads", "2", "--model.stem_channels", "8",
            "--train.batch_size", "8", "--train.progress", "false"]
    assert main(argv) == 0
    return out, data


def test_end_to_end_train_reaches_high_accuracy(waves_run):
    out, _ = waves_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "timeseries" and metrics["model"] == "ts-transformer"
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
    record = json.loads((out / "data.json").read_text())
    assert record["class_names"] == ["-3", "5"] and record["input_shape"] == [1, 32]
    assert record["info"]["length"] == 32 and record["info"]["normalize"] == "zscore"
    html = (out / "report.html").read_text()
    assert '"kind":"series"' in html and '"type":"series"' in html


def test_predict_and_explain(waves_run, tmp_path):
    from attnlab.run import load_run, predict_run
    from attnlab.tasks.timeseries import explain_series

    out, data = waves_run
    test_file = data / "Waves_TEST.tsv"
    results = predict_run(out, [str(test_file)], top_k=2)
    assert len(results) == 40 and results[0]["input"] == f"{test_file}:1"
    assert {r["class"] for r in results} <= {"-3", "5"} and len(results[0]["top"]) == 2
    correct = np.mean([r["class"] == r["label"] for r in results])
    assert correct >= 0.9
    assert all(0 <= r["score"] <= 1 for r in results)
    one = tmp_path / "one.npy"
    row = np.array([float(v) for v in test_file.read_text().splitlines()[1].split("\t")[1:]])
    np.save(one, row)
    single = predict_run(out, [str(one)])
    assert single[0]["input"] == str(one) and single[0]["class"] == results[1]["class"]
    assert single[0]["score"] == pytest.approx(results[1]["score"], abs=1e-6)
    bad = tmp_path / "short.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(DataError, match="the model takes series of 32"):
        predict_run(out, [str(bad)])

    _, model, record = load_run(out)
    example = explain_series(model, record, str(test_file))
    assert example.kind == "series" and example.label in ("-3", "5") and example.num_prefix_tokens == 1
    assert len(example.maps) == 1 and example.maps[0].shape == (2, 33, 33) and example.tokens[:2] == ["CLS", "t0"]
    from attnlab.explain.plots import time_series_plot
    from attnlab.explain.report import write_report

    page = write_report(tmp_path / "x.html", [example])
    assert "<canvas" in page.read_text()
    cls_to_steps = example.maps[0].mean(0)[0, 1:]
    time_series_plot(example.input, cls_to_steps, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_encoder_stem_run_trains_and_explains(tmp_path):
    """The Encoder-stem config end to end: its report and `attnlab explain` draw tokens of 4 steps."""
    from attnlab.cli import main

    data = _synthetic(tmp_path / "Waves")
    out = tmp_path / "enc-run"
    argv = ["train", "--task", "timeseries", "--data", str(data), "--out", str(out), "--epochs", "3",
            "--model.stem_channels", "0", "--model.stem_widths", "8,8,8", "--model.stem_kernels", "5,3,3",
            "--model.stem_norm", "instance", "--model.pooling", "flatten", "--model.dim", "16", "--model.depth", "1",
            "--model.num_heads", "2", "--train.batch_size", "8", "--train.progress", "false"]
    assert main(argv) == 0
    assert '"kind":"series"' in (out / "report.html").read_text()
    one = tmp_path / "one.npy"
    np.save(one, np.sin(np.arange(32) / 3.0))
    png = tmp_path / "e.png"
    assert main(["explain", str(out), str(one), "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
