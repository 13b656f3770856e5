"""Hugging Face weights load into attnlab models and give the same outputs."""

from __future__ import annotations

import numpy as np
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


def test_bert_from_a_save_pretrained_directory_matches(tmp_path):
    from attnlab.interop import load_hf_bert

    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, num_labels=3)
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "cls")
    ours = load_hf_bert(tmp_path / "cls")
    ids = torch.randint(1, 99, (3, 11))
    ids[2, 7:] = 0  # padding: pad_token_id 0, attention_mask 0 there
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=(ids != 0).long(), token_type_ids=types).logits
        got = ours(ids, types)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    transformers.BertModel(config).eval().save_pretrained(tmp_path / "bare")
    bare = transformers.BertModel.from_pretrained(tmp_path / "bare").eval()
    encoder = load_hf_bert(tmp_path / "bare")
    with torch.no_grad():
        hidden, _ = encoder(ids[:2])
        torch.testing.assert_close(hidden, bare(input_ids=ids[:2]).last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", ["gelu_new", "gelu_pytorch_tanh"])
def test_bert_with_a_tanh_gelu_matches(tmp_path, act):
    """BERT-family checkpoints with hidden_act gelu_new / gelu_pytorch_tanh were refused ("gelu, relu" only)."""
    from attnlab.interop import load_hf_bert

    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, num_labels=3, hidden_act=act,
                                     initializer_range=0.5)  # pre-activations past where the two GELUs agree
    torch.manual_seed(1)
    hf = transformers.BertForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path)
    ids = torch.randint(1, 99, (3, 11))
    ids[1, 6:] = 0
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=(ids != 0).long()).logits
        got = load_hf_bert(tmp_path)(ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    exact = transformers.BertForSequenceClassification(transformers.BertConfig(**{**config.to_dict(), "hidden_act": "gelu"}))
    exact.load_state_dict(hf.state_dict())
    with torch.no_grad():  # the approximation is what is matched, not a difference too small to see
        assert (exact.eval()(input_ids=ids, attention_mask=(ids != 0).long()).logits - want).abs().max() > 1e-6


@pytest.mark.parametrize("act", ["gelu_new", "gelu_pytorch_tanh", "relu"])
def test_vit_with_a_tanh_gelu_matches(tmp_path, act):
    """ViT checkpoints with hidden_act gelu_new / gelu_pytorch_tanh (or relu) were refused ("gelu only");
    the blocks now take the tanh GELU (``activation gelu_tanh``), as the BERT and GPT-2 loaders do."""
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=16, patch_size=4, num_channels=3, num_labels=5, hidden_act=act,
                                    initializer_range=0.5)  # pre-activations past where the two GELUs agree
    torch.manual_seed(1)
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(tmp_path)
    ours = load_hf_vit(tmp_path)
    assert ours.config.activation == ("relu" if act == "relu" else "gelu_tanh")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        want = hf(pixel_values=x).logits
        got = ours(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    exact = transformers.ViTForImageClassification(transformers.ViTConfig(**{**config.to_dict(), "hidden_act": "gelu"}))
    exact.load_state_dict(hf.state_dict())
    with torch.no_grad():  # the approximation is what is matched, not a difference too small to see
        assert (exact.eval()(pixel_values=x).logits - want).abs().max() > 1e-4


def test_vit_with_an_unknown_activation_names_it(tmp_path):
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                    image_size=16, patch_size=4, num_labels=2, hidden_act="silu")
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="hidden_act 'silu' is not supported"):
        load_hf_vit(tmp_path)


def test_vit_without_qkv_biases_names_the_setting(tmp_path):
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                    image_size=16, patch_size=4, num_labels=2, qkv_bias=False)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="qkv_bias false is not supported"):
        load_hf_vit(tmp_path)


def test_gpt2_from_a_save_pretrained_directory_matches(tmp_path):
    from attnlab.models.generation import generate
    from attnlab.interop import load_hf_gpt2

    config = transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    ours = load_hf_gpt2(tmp_path)
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        got = ours(ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # greedy continuation agrees with HF's own generate
        theirs = hf.generate(ids[:1, :5], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, ids[:1, :5], max_new_tokens=8, temperature=0), theirs)


def test_wrong_model_type_is_a_clear_error(tmp_path):
    from attnlab.interop import load_hf_gpt2

    transformers.BertModel(transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=8)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="model_type is 'bert', expected 'gpt2'"):
        load_hf_gpt2(tmp_path)


def _set_config(directory, **entries):
    import json

    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **entries}))


@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query"])
def test_bert_with_relative_positions_is_refused(tmp_path, kind):
    """transformers 4 saved ``position_embedding_type`` relative_* BERTs (distance embeddings in the
    attention); read as absolute positions they would give other outputs without a word."""
    from attnlab.interop import load_hf_bert

    transformers.BertModel(transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=8)).save_pretrained(tmp_path)
    _set_config(tmp_path, position_embedding_type=kind)
    with pytest.raises(CheckpointError, match=f"position_embedding_type '{kind}' is not supported"):
        load_hf_bert(tmp_path)


def test_gpt2_without_attention_scaling_is_refused(tmp_path):
    """``scale_attn_weights: false`` (scores not divided by sqrt(head dim)) changes every output."""
    from attnlab.interop import load_hf_gpt2

    config = transformers.GPT2Config(vocab_size=30, n_positions=8, n_embd=16, n_layer=1, n_head=2, scale_attn_weights=False)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="scale_attn_weights false is not supported"):
        load_hf_gpt2(tmp_path)


def _untied_gpt2(directory):
    config = transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # an output layer trained apart from the token table
        hf.lm_head.weight.normal_(0, 0.5)
    assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    hf.save_pretrained(directory)
    return hf


def test_gpt2_with_its_own_output_layer_matches(tmp_path):
    """``tie_word_embeddings: false``: the saved ``lm_head.weight`` is the output layer, not the token table."""
    from attnlab.interop import load_hf_gpt2

    hf = _untied_gpt2(tmp_path)
    ours = load_hf_gpt2(tmp_path)
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert ours.lm_head.weight is not ours.token_embed.weight


@pytest.mark.parametrize("processor", [
    {},  # ViTImageProcessor's defaults: mean = std = 0.5
    {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
    {"image_mean": 0.3, "image_std": [0.2, 0.25, 0.5]},
    {"rescale_factor": 1 / 127.5, "image_mean": [1.0, 1.0, 1.0], "image_std": [1.0, 1.0, 1.0]},
    {"do_rescale": False, "image_mean": [120.0, 110.0, 100.0], "image_std": [60.0, 50.0, 40.0]},
    {"do_normalize": False},
])
def test_image_normalisation_is_the_processor_s(tmp_path, processor):
    """``read_image_normalisation``'s mean / std, applied to pixels / 255, give ViTImageProcessor's pixel_values."""
    from attnlab.interop import hf

    transformers.ViTImageProcessor(**processor).save_pretrained(tmp_path)
    norm = hf.read_image_normalisation(tmp_path)
    assert norm["file"] == "preprocessor_config.json" and len(norm["mean"]) == len(norm["std"]) in (1, 3)
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    want = transformers.ViTImageProcessor.from_pretrained(tmp_path)(images=pixels, do_resize=False,
                                                                    return_tensors="np").pixel_values[0]  # (3, 6, 5)
    x = np.moveaxis(pixels, -1, 0).astype(np.float64) / 255
    got = (x - np.array(norm["mean"])[:, None, None]) / np.array(norm["std"])[:, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_no_processor_file_means_no_normalisation(tmp_path):
    from attnlab.interop import hf

    assert hf.read_image_normalisation(tmp_path) is None
