"""Small random Hugging Face ViT checkpoints, saved as transformers' ``save_pretrained`` writes them, and image folders."""

from __future__ import annotations

import numpy as np
import torch


def save_vit(path, *, classifier=True, image_size=16, patch_size=4, channels=3, seed=0, processor=None, **config):
    """A small random Hugging Face ViT saved with save_pretrained (safetensors); ``processor``: a
    ViTImageProcessor's keyword arguments, saved beside it (its preprocessor_config.json)."""
    import transformers

    hf_config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                       image_size=image_size, patch_size=patch_size, num_channels=channels, num_labels=5,
                                       **config)
    torch.manual_seed(seed)
    cls = transformers.ViTForImageClassification if classifier else transformers.ViTModel
    hf = cls(hf_config).eval()
    with torch.no_grad():  # HF initialises the position table to zeros-ish; make the resampling visible
        embeddings = (hf.vit if classifier else hf).embeddings
        embeddings.position_embeddings.normal_(0.0, 0.5)
        embeddings.cls_token.normal_(0.0, 0.5)
    hf.save_pretrained(path)
    if processor is not None:
        transformers.ViTImageProcessor(**processor).save_pretrained(path)
    return path


def image_folder(root, size=16):
    """Class folders red, green, blue of 12 random size x size RGB PNGs each, the class's channel the brightest."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            pixels[..., c] += 150
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root
