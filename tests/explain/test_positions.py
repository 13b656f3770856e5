"""The task adapters' ``Positions``: the removed value is what each docstring says, and the
forward on the intact positions is the model's own output (checked against calling the model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.explain.card import check_methods, score_methods
from attnlab.explain.positions import Patches, Spans
from attnlab.models.registry import create_model
from attnlab.tasks import load_task, task_spec
from attnlab.tasks.positions import split_items


def _series_folder(root, *, n=16, length=13, channels_shift=3.0):
    """UCR-style two-class folder; odd length so a span does not divide it evenly."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for split in ("TRAIN", "TEST"):
        rows = []
        for i in range(n):
            label = i % 2
            values = rng.normal(channels_shift * label, 1.0, length)
            rows.append(f"{label + 1}\t" + "\t".join(f"{v:.4f}" for v in values))
        (root / f"{root.name}_{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def _text_file(path, n=40):
    rng = np.random.default_rng(1)
    words = {"sport": ["goal", "match", "team", "ball"], "food": ["bread", "soup", "apple", "cake"]}
    lines = []
    for i in range(n):
        topic = list(words)[i % 2]
        k = 2 + i % 3  # three lengths: several length groups
        lines.append(f"{topic}\t" + " ".join(rng.choice(words[topic], size=k).tolist()))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("pooling,patch_size", [("cls", 2), ("mean", 3)])
def test_series_positions_forward_and_removed(tmp_path, pooling, patch_size, one_thread):
    root = _series_folder(tmp_path / "Toy")
    data = load_task("timeseries", str(root), seed=0, normalize="none")
    spec = task_spec("timeseries")
    model = create_model("ts-transformer", **spec.model_fields(data), dim=16, depth=1, num_heads=2, stem_channels=0,
                         patch_size=patch_size, pooling=pooling).eval()
    (g,) = spec.explain_positions(model, data, *split_items(data, "test", 8))
    series = torch.stack([data.test[i][0] for i in range(8)])
    with torch.no_grad():
        torch.testing.assert_close(g.forward(g.x), model(series), atol=1e-5, rtol=0)
    assert g.x.shape[1] == model.num_patches  # one position per non-prefix token
    # removed: the training mean per channel over every series and time step, at every step
    train = torch.stack([data.train[i][0] for i in range(len(data.train))]).double()
    expected = train.mean(dim=(0, 2))  # (C,)
    torch.testing.assert_close(g.removed.double(), expected.repeat_interleave(patch_size), atol=1e-6, rtol=0)
    assert abs(float(expected[0])) > 0.5  # the two classes' levels differ: the mean is not a trivial 0


def test_text_positions_forward_and_removed(tmp_path, one_thread):
    path = _text_file(tmp_path / "topics.tsv")
    data = load_task("text-classification", str(path), seed=0)
    spec = task_spec("text-classification")
    for pooling in ("first", "max"):
        model = create_model("text-transformer", **spec.model_fields(data), dim=16, depth=1, num_heads=2,
                             conv_channels=8, pooling=pooling).eval()
        groups = spec.explain_positions(model, data, *split_items(data, "validation", 12))
        assert len(groups) > 1 and sum(len(g) for g in groups) == min(12, len(data.val))
        for g in groups:
            ids = torch.stack([data.val[int(i)][0] for i in g.index])  # (B, N), one length: no padding
            with torch.no_grad():
                torch.testing.assert_close(g.forward(g.x), model(ids), atol=1e-5, rtol=0)
            assert g.x.shape[1] == ids.shape[1] - model.num_prefix_tokens
            # the word vocabulary has no [MASK]: removed is the <pad> token's embedding
            torch.testing.assert_close(g.removed, model.encoder.token_embed.weight[model.config.pad_id])
            assert "<pad>" in g.removed_means


def test_patches_and_spans_round_trip():
    images = torch.randn(3, 2, 6, 9)
    wrap = Patches(torch.nn.Identity(), images.shape[1:], (2, 3))
    x = wrap.cut(images)
    assert x.shape == (3, 9, 2 * 2 * 3)
    torch.testing.assert_close(wrap(x), images)
    # patch (r, c) holds pixels [2r:2r+2, 3c:3c+3], channel-major
    torch.testing.assert_close(x[1, 4].reshape(2, 2, 3), images[1, :, 2:4, 3:6])
    series = torch.randn(2, 3, 11)
    for count in (2, 4):  # 2 spans of 4 leave 3 steps outside; 4 spans of 4 pad one
        spans = Spans(torch.nn.Identity(), 3, 11, 4, count)
        torch.testing.assert_close(spans(spans.cut(series)), series)


def test_attention_methods_on_a_model_without_attention_name_both():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"'rollout'.*Sequential"):
        check_methods(["rollout"], model, "Sequential")
    with pytest.raises(ValueError, match=r"unknown relevance method 'nope' for model Sequential"):
        check_methods(["nope"], model, "Sequential")
    assert "rollout" not in check_methods(None, model, "Sequential")


def test_best_method_is_the_argmin_of_positive_auc(tmp_path, one_thread):
    root = _series_folder(tmp_path / "Toy")
    data = load_task("timeseries", str(root), seed=0, normalize="none")
    spec = task_spec("timeseries")
    model = create_model("ts-transformer", **spec.model_fields(data), dim=16, depth=1, num_heads=2,
                         stem_channels=0).eval()
    scores = score_methods(spec.explain_positions(model, data, *split_items(data, "test", 8)), ["rollout", "gradient", "random"],
                           steps=2, resamples=50)
    pos = {m: r["positive"][0] for m, r in scores["methods"].items() if m != "random"}
    assert scores["best"] == min(pos, key=pos.get)
    assert scores["examples"] == 8 and "training mean" in scores["removed"]
    for r in scores["methods"].values():
        assert r["positive"][1] <= r["positive"][0] <= r["positive"][2]
        assert len(r["curves"]["positive"]) == len(scores["fractions"])


def test_audio_positions_forward_removed_and_draw_order(tmp_path, one_thread):
    from tests.data.test_audio import _fsdd_folder

    root = _fsdd_folder(tmp_path / "fsdd", count=6)
    data = load_task("audio", str(root), seed=0, val_fraction=0.25, n_mels=16, duration=0.256)
    spec = task_spec("audio")
    model = create_model("audio-transformer", **spec.model_fields(data), dim=16, depth=1, num_heads=2).eval()
    (g,) = spec.explain_positions(model, data, *split_items(data, "test", 4))
    x = torch.stack([data.test[i][0] for i in range(4)])  # (B, C, n_mels, frames)
    with torch.no_grad():
        torch.testing.assert_close(g.forward(g.x), model(x), atol=1e-5, rtol=0)
    gh, gw = model.patch_grid
    assert g.x.shape[1] == gh * gw
    # removed: the mean training frame (per mel band), cut into the same patches
    train = torch.stack([data.train[i][0] for i in range(len(data.train))]).double()
    frame = train.mean(dim=(0, 3))  # (C, n_mels)
    ph, pw = x.shape[2] // gh, x.shape[3] // gw
    for r in range(gh):
        band = frame[:, r * ph:(r + 1) * ph]  # (C, ph): every frame of a removed patch takes it
        want = band[:, :, None].expand(-1, -1, pw).reshape(-1)
        for c in range(gw):
            torch.testing.assert_close(g.removed[r * gw + c].double(), want, atol=1e-6, rtol=0)
    assert g.order[:gw] == list(range((gh - 1) * gw, gh * gw))  # the report draws the top band first


def test_attention_methods_on_a_digits_model_without_attention_are_refused_by_name(one_thread):
    from attnlab.errors import ConfigError
    from attnlab.tasks.positions import faithfulness

    class Cnn(torch.nn.Module):  # a patch grid, but no attnlab attention
        patch_grid, num_prefix_tokens = (4, 4), 0

        def __init__(self):
            super().__init__()
            self.conv, self.head = torch.nn.Conv2d(1, 4, 2, stride=2), torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.conv(x).flatten(1))

    data = load_task("digits", None, seed=0)
    spec, model = task_spec("digits"), Cnn().eval()
    with pytest.raises(ConfigError, match=r"method 'gradient' needs attention maps, but model tiny-cnn has no attnlab"):
        faithfulness(spec, model, "tiny-cnn", data, methods=["gradient"], limit=4)
    scores = faithfulness(spec, model, "tiny-cnn", data, methods=None, limit=4, steps=2)
    assert list(scores["methods"]) == ["input_x_gradient", "integrated_gradients", "random"]
