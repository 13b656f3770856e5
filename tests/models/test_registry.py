"""Every registered model: forward, backward, no NaN, save/load round trip."""

from __future__ import annotations

import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.models import create_model, list_models, model_entry
from attnlab.training import load_weights, save_weights


@pytest.mark.parametrize("name", list_models())
def test_model_forward_backward_and_roundtrip(name, tmp_path):
    entry = model_entry(name)
    assert entry.example_inputs is not None, f"{name} registers no example_inputs"
    model = create_model(name)
    inputs = entry.example_inputs(model.config)
    out = model(*inputs)
    logits = out if isinstance(out, torch.Tensor) else out[0]
    assert torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        before = model(*inputs)
    save_weights(model, tmp_path / "m.safetensors")
    clone = create_model(name, **vars(model.config))
    load_weights(clone, tmp_path / "m.safetensors")
    clone.eval()
    with torch.no_grad():
        after = clone(*inputs)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_registry_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown model 'nope'; known models:"):
        create_model("nope")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['depthh'\]"):
        create_model("vit-tiny", depthh=3)
    with pytest.raises(ConfigError, match="must be divisible by patch_size"):
        create_model("vit-tiny", image_size=(9, 9))
    with pytest.raises(ConfigError, match="depth must be a positive number"):
        create_model("vit-tiny", depth=0)
    with pytest.raises(ConfigError, match="pooling must be one of"):
        create_model("vit-tiny", pooling="max")


def test_vit_rejects_wrong_image_shape():
    model = create_model("vit-tiny")
    with pytest.raises(ValueError, match=r"expects images \(B, 1, 8, 8\), got shape \(2, 3, 8, 8\)"):
        model(torch.randn(2, 3, 8, 8))
