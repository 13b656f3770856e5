"""Text models: padding is masked, causality holds, embeddings tie, and configs reject bad values."""

from __future__ import annotations

import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.layers.packing import UNPAD_ENV, packing_for
from attnlab.models import create_model
from attnlab.models.text import TextClassifier, TextClassifierConfig


# Tiny ops: one thread is faster, and several threads crawl on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("pooling", ["first", "mean", "max"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_classifier_ignores_padding(pooling, norm_first):
    torch.manual_seed(0)
    model = create_model("text-transformer", vocab_size=50, num_classes=3, dim=32, depth=2, num_heads=4, pooling=pooling,
                         norm_first=norm_first, conv_kernel=3 if norm_first else 0).double().eval()
    tokens = torch.randint(4, 50, (2, 6))
    padded = torch.cat([tokens, torch.zeros(2, 5, dtype=torch.long)], 1)
    torch.testing.assert_close(model(padded), model(tokens), rtol=1e-10, atol=1e-10)


def test_classifier_ngram_convs_and_word_dropout():
    torch.manual_seed(0)
    model = create_model("text-transformer", vocab_size=50, num_classes=3, dim=32, depth=1, num_heads=4, pooling="max",
                         conv_widths=(1, 3, 5), conv_channels=6, word_dropout=0.5, head_dropout=0.4).double().eval()
    assert model.head.in_features == 32 + 3 * 6 and model.dropout.p == 0.4
    tokens = torch.randint(4, 50, (3, 7))
    tokens[-1, 2:] = 0  # a padded row, shorter than the widest filter
    out = model(tokens)
    assert out.shape == (3, 3) and torch.isfinite(out).all()
    torch.testing.assert_close(model(tokens[-1:, :2]), out[-1:], rtol=1e-10, atol=1e-10)  # padding is ignored
    model.train()
    model(tokens).sum().backward()
    assert all(conv.weight.grad is not None for conv in model.ngram_convs)
    seen = []
    model.encoder.token_embed.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model(tokens)
    dropped = seen[-1] != tokens
    assert dropped.any() and (seen[-1][dropped] == 1).all()  # replaced by <unk>
    assert not dropped[:, 0].any() and not dropped[tokens == 0].any()  # never the <bos> or padding
    with pytest.raises(ConfigError, match="conv_widths"):
        create_model("text-transformer", conv_widths=(3, 0))
    with pytest.raises(ConfigError, match="word_dropout"):
        create_model("text-transformer", word_dropout=1.0)


@pytest.mark.parametrize("pos_embed", ["learned", "sincos", "rope", "alibi", "relative", "none"])
def test_classifier_positions(pos_embed):
    model = create_model("text-transformer", vocab_size=30, num_classes=2, dim=16, depth=1, num_heads=2, pos_embed=pos_embed)
    out = model(torch.randint(4, 30, (3, 7)))
    assert out.shape == (3, 2) and torch.isfinite(out).all()


def test_lm_is_causal_and_tied():
    torch.manual_seed(0)
    model = create_model("gpt-lm", vocab_size=40, max_length=12, dim=32, depth=2, num_heads=4).double().eval()
    assert model.lm_head.weight is model.token_embed.weight
    x = torch.randint(0, 40, (2, 10))
    y = x.clone()
    y[:, 6:] = torch.randint(0, 40, (2, 4))
    torch.testing.assert_close(model(x)[:, :6], model(y)[:, :6], rtol=1e-12, atol=1e-12)  # the future is not seen
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_seq2seq_source_padding_and_embedding_sharing():
    torch.manual_seed(0)
    model = create_model("transformer-mt", src_vocab_size=30, tgt_vocab_size=30, dim=32, encoder_depth=1, decoder_depth=1,
                         num_heads=4).double().eval()
    assert model.src_embed is model.tgt_embed and model.out_proj.weight is model.tgt_embed.weight
    src = torch.randint(4, 30, (2, 5))
    tgt = torch.randint(4, 30, (2, 4))
    padded = torch.cat([src, torch.zeros(2, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model(padded, tgt), model(src, tgt), rtol=1e-10, atol=1e-10)
    separate = create_model("transformer-mt", src_vocab_size=30, tgt_vocab_size=20, share_embeddings=False, tie_embeddings=False,
                            dim=16, encoder_depth=1, decoder_depth=1, num_heads=2)
    assert separate(src, torch.randint(4, 20, (2, 3))).shape == (2, 3, 20)
    assert separate.out_proj.weight is not separate.tgt_embed.weight


def _unpadded_matches_padded(monkeypatch, model, forward) -> torch.Tensor:
    """Assert ``forward()`` and the parameter gradients of a squared loss agree with the encoder
    unpadded and padded (``ATTNLAB_UNPAD``); returns the unpadded output."""
    def run(env: str) -> tuple[torch.Tensor, dict]:
        monkeypatch.setenv(UNPAD_ENV, env)
        model.zero_grad()
        out = forward()
        out.pow(2).sum().backward()
        return out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    (packed, packed_grads), (padded, padded_grads) = run("1"), run("0")
    torch.testing.assert_close(packed, padded, rtol=1e-10, atol=1e-10)
    assert packed_grads.keys() == padded_grads.keys()
    for name in packed_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], rtol=1e-9, atol=1e-10, msg=name)
    return packed


def test_seq2seq_unpadded_encoder_matches_padded_with_gradients(monkeypatch):
    torch.manual_seed(2)
    model = create_model("transformer-mt", src_vocab_size=30, tgt_vocab_size=30, dim=16, encoder_depth=2, decoder_depth=1,
                         num_heads=2, dropout=0.0).double()
    src = torch.randint(4, 30, (3, 7)).masked_fill(torch.arange(7)[None, :] >= torch.tensor([[7], [2], [4]]), 0)
    tgt = torch.randint(4, 30, (3, 5))
    assert packing_for(src != 0, torch.zeros(3, 7, 16), model.encoder_blocks) is not None  # 38% padding

    _unpadded_matches_padded(monkeypatch, model, lambda: model(src, tgt))


def test_text_configs_reject_bad_values():
    with pytest.raises(ConfigError, match="share_embeddings needs one vocabulary"):
        create_model("transformer-mt", src_vocab_size=30, tgt_vocab_size=20)
    with pytest.raises(ConfigError, match="pooling must be one of"):
        create_model("text-transformer", pooling="sum")
    with pytest.raises(ConfigError, match="must be divisible by num_heads"):
        create_model("gpt-lm", dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="pad_id=99 is outside"):
        create_model("text-transformer", vocab_size=50, pad_id=99)


def _unpadding_classifier(**kw) -> TextClassifier:
    config = TextClassifierConfig(vocab_size=50, num_classes=3, dim=24, depth=2, num_heads=4, dropout=0.0,
                                  embed_dropout=0.0, **{"pooling": "mean", **kw})
    return TextClassifier(config).double()


@pytest.mark.parametrize("kw", [{}, {"norm_first": False, "embed_norm": True, "pooler": True, "pooling": "first"},
                                {"pos_embed": "rope"}])
def test_the_text_classifier_unpadded_matches_padded_and_alone(monkeypatch, kw):
    torch.manual_seed(1)
    model = _unpadding_classifier(**kw)
    lengths = [9, 3, 5, 2, 9]
    tokens = torch.randint(2, 50, (5, 9)).masked_fill(~(torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]), 0)
    assert packing_for(tokens != 0, torch.zeros(5, 9, 24), model.encoder.blocks) is not None  # 47% padding

    packed = _unpadded_matches_padded(monkeypatch, model, lambda: model(tokens))
    with torch.no_grad():
        alone = torch.cat([model(tokens[i : i + 1, :n]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(packed, alone, rtol=1e-10, atol=1e-10)
