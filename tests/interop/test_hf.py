"""Hugging Face weights load into attnlab models and give the same outputs."""

from __future__ import annotations

import pytest
import torch

from attnlab.errors import CheckpointError
from attnlab.interop import load_hf_vit

transformers = pytest.importorskip("transformers")


def test_vit_from_a_save_pretrained_directory_matches(tmp_path):
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=16, patch_size=4, num_channels=3, num_labels=5)
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(tmp_path)
    ours = load_hf_vit(tmp_path)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        want = hf(pixel_values=x).logits
        got = ours(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_wrong_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_hf_vit(tmp_path)
