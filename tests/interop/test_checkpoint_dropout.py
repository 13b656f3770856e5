"""Converted checkpoints drop out where their own library does: BERT, GPT-2 and Hugging Face's
ViT have no dropout on the feed-forward's hidden units (BertIntermediate, GPT2MLP, ViTIntermediate)."""

from __future__ import annotations

import pytest
import torch

from attnlab.interop.bert import open_bert_checkpoint
from attnlab.interop.gpt2 import open_gpt2_checkpoint
from attnlab.models import create_model

transformers = pytest.importorskip("transformers")


def _hidden_dropout_is_off(blocks) -> bool:
    x = torch.randn(2, 5, blocks[0].norm1.normalized_shape[0])
    out = []
    for block in blocks:
        assert block.dropout.p == 0.5  # the residual dropout stays the checkpoint's
        block.mlp.train()
        train = block.mlp(x)
        out.append(torch.equal(train, block.mlp.eval()(x)))
    return all(out)


def test_bert_feed_forward_has_no_hidden_dropout(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, hidden_dropout_prob=0.5, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(tmp_path)
    model = create_model("text-transformer", **open_bert_checkpoint(tmp_path).model_fields(), num_classes=3)
    assert _hidden_dropout_is_off(model.encoder.blocks)
    scratch = create_model("text-transformer", dim=32, num_heads=4, depth=1, dropout=0.5)
    assert not _hidden_dropout_is_off(scratch.encoder.blocks)  # timm-style hidden dropout by default


def test_gpt2_feed_forward_has_no_hidden_dropout(tmp_path):
    config = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=16, resid_pdrop=0.5)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    model = create_model("gpt-lm", **open_gpt2_checkpoint(tmp_path).model_fields())
    assert _hidden_dropout_is_off(model.blocks)
