"""capture / recording / capture_hf: exact weights, subsets, hook hygiene."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from attnlab.attention import attention
from attnlab.explain import AttentionMaps, attention_modules, capture, capture_hf, recording
from attnlab.layers import TransformerBlock
from tests.conftest import reference_attention
from tests.explain._tiny import TinyViT, block_inputs, manual_weights


def _model(**kw) -> TinyViT:
    return TinyViT(**kw).eval()


def test_capture_equals_manual_softmax_float64():
    model = _model().double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    maps = capture(model, x)
    assert maps.names == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    for block, h, got in zip(model.blocks, block_inputs(model, x), maps.maps):
        assert got.shape == (2, 4, 7, 7)
        torch.testing.assert_close(got, manual_weights(block, h), rtol=0, atol=1e-12)


def test_capture_equals_kernel_weights_exactly():
    model = _model()
    x = torch.randn(3, 6, 16)
    maps = capture(model, x)
    for block, h, got in zip(model.blocks, block_inputs(model, x), maps.maps):
        attn = block.attn
        hn = block.norm1(h)
        q = attn._split(attn.q_proj(hn), attn.num_heads)  # (B, H, N, D)
        k = attn._split(attn.k_proj(hn), attn.num_kv_heads)
        v = attn._split(attn.v_proj(hn), attn.num_kv_heads)
        _, expected = attention(q, k, v, return_weights=True)
        assert torch.equal(got, expected)
        torch.testing.assert_close(got.double(), manual_weights(block, h), rtol=0, atol=2e-6)


def test_capture_with_padding_causal_and_grouped_heads_against_reference():
    model = _model(num_kv_heads=2, is_causal=True).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False  # second example: last two keys are padding
    maps = capture(model, x, mask=mask)
    for block, h, got in zip(model.blocks, block_inputs(model, x, mask), maps.maps):
        attn = block.attn
        hn = block.norm1(h)
        q = attn._split(attn.q_proj(hn), attn.num_heads)
        k = attn._split(attn.k_proj(hn), attn.num_kv_heads)
        _, ref = reference_attention(q, k, k, mask=mask[:, None, None, :], is_causal=True)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(got, manual_weights(block, h, mask, is_causal=True), rtol=0, atol=1e-12)
        assert torch.all(got[1, :, :, 5:] == 0)
        assert torch.all(got.triu(1) == 0)


def test_output_unchanged_by_capture():
    model = _model()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        plain = model(x)
    maps = capture(model, x)
    assert torch.equal(maps.output, plain)
    assert not maps.output.requires_grad


def test_subset_selection_shapes_and_values():
    model = _model(depth=4)
    x = torch.randn(2, 6, 16)
    full = capture(model, x)
    sub = capture(model, x, layers=[0, "blocks.2.attn", -1], heads=[3, 1], query_rows=slice(1, 4))
    assert sub.names == ["blocks.0.attn", "blocks.2.attn", "blocks.3.attn"]
    for name, got in sub:
        assert got.shape == (2, 2, 3, 7)
        assert torch.equal(got, full.layer(name)[:, [3, 1], 1:4])
        # A slice must not keep the full (B, H, N, M) storage alive.
        assert got.untyped_storage().nbytes() == got.numel() * got.element_size()
    one = capture(model, x, layers=1, heads=2, query_rows=[0])
    assert one.names == ["blocks.1.attn"] and one.maps[0].shape == (2, 1, 1, 7)
    assert torch.equal(one.maps[0], full.maps[1][:, 2:3, 0:1])


def test_unselected_layers_get_no_hook():
    model = _model()
    seen = {}

    def check(module, args, kwargs=None):
        seen[module] = module.weight_hook

    for _, mod in attention_modules(model):
        mod.register_forward_pre_hook(check)
    capture(model, torch.randn(1, 6, 16), layers=[1])
    attns = [b.attn for b in model.blocks]
    assert seen[attns[0]] is None and seen[attns[2]] is None and seen[attns[1]] is not None


def test_hooks_restored_after_success_and_exception():
    model = _model()
    calls = []

    def existing(module, weights):
        calls.append(weights.shape)

    model.blocks[1].attn.weight_hook = existing
    capture(model, torch.randn(1, 6, 16))
    assert model.blocks[0].attn.weight_hook is None and model.blocks[2].attn.weight_hook is None
    assert model.blocks[1].attn.weight_hook is existing
    assert calls == [(1, 4, 7, 7)]  # the existing hook was chained, not shadowed

    model.blocks[1].attn.weight_hook = None
    with pytest.raises(RuntimeError):
        capture(model, torch.randn(1, 6, 15))  # wrong feature size: the forward raises
    assert all(mod.weight_hook is None for _, mod in attention_modules(model))

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = TransformerBlock(8, 2)

        def forward(self, x):
            self.block(x)
            raise RuntimeError("after the attention ran")

    boom = Boom()
    with pytest.raises(RuntimeError, match="after the attention"):
        capture(boom, torch.randn(1, 3, 8))
    assert boom.block.attn.weight_hook is None


def test_cross_attention_and_shared_modules():
    block = TransformerBlock(8, 2, cross_attention=True).eval()

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, x, ctx):
            return self.block(self.block(x, ctx), ctx)

    maps = capture(Shared(), torch.randn(2, 3, 8), torch.randn(2, 5, 8))
    assert maps.names == ["block.attn", "block.cross_attn", "block.attn#1", "block.cross_attn#1"]
    assert [tuple(m.shape) for m in maps.maps] == [(2, 2, 3, 3), (2, 2, 3, 5)] * 2
    with pytest.raises(ValueError, match="shapes differ"):
        maps.stack()
    sub = capture(Shared(), torch.randn(2, 3, 8), torch.randn(2, 5, 8), layers=["block.attn"])
    assert sub.stack().shape == (2, 2, 2, 3, 3)


def test_maps_helpers_and_bad_selections():
    model = _model()
    maps = capture(model, torch.randn(2, 6, 16))
    assert isinstance(maps, AttentionMaps) and len(maps) == 3
    assert maps.stack().shape == (3, 2, 4, 7, 7)
    assert torch.equal(maps.layer(-1), maps.maps[2])
    arrays = maps.to_numpy()
    assert arrays[0].shape == (2, 4, 7, 7) and abs(arrays[0].sum(-1) - 1).max() < 1e-5
    with pytest.raises(ValueError, match="no attention module named"):
        capture(model, torch.randn(1, 6, 16), layers=["blocks.9.attn"])
    with pytest.raises(ValueError, match="out of range"):
        capture(model, torch.randn(1, 6, 16), layers=[3])
    with pytest.raises(ValueError, match="out of range"):
        capture(model, torch.randn(1, 6, 16), heads=[4])
    with pytest.raises(ValueError, match="no attnlab MultiHeadAttention"):
        capture(nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(RuntimeError, match="grad=True"):
        maps.grads()


def _manual_forward(model: TinyViT, x, leaf_layer: int):
    """TinyViT by hand in float64, layer ``leaf_layer``'s weights a leaf W used as out = W @ V."""
    h = model.tokens(x)
    leaf = None
    for i, block in enumerate(model.blocks):
        attn = block.attn
        hn = block.norm1(h)
        q, k, v = (attn._split(p(hn), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim), dim=-1)  # (B, H, N, N)
        if i == leaf_layer:
            leaf = w = w.detach().requires_grad_()
        out = (w @ v).transpose(1, 2).reshape(h.shape)  # (B, N, C)
        h = h + attn.out_proj(out)
        h = h + block.mlp(block.norm2(h))
    return model.head(model.norm(h)[:, 0]), leaf


def test_grad_capture_gives_exact_weight_gradients():
    model = _model().double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    maps = capture(model, x, grad=True, heads=[0, 2], query_rows=slice(0, 5))
    assert maps.output.requires_grad
    maps.output[:, 1].sum().backward()
    grads = maps.grads()
    assert [g.shape for g in grads] == [m.shape for m in maps.maps] == [(2, 2, 5, 7)] * 3
    for layer in range(3):
        out, leaf = _manual_forward(model, x, layer)
        torch.testing.assert_close(out, maps.output, rtol=0, atol=1e-12)
        out[:, 1].sum().backward()
        torch.testing.assert_close(grads[layer], leaf.grad[:, [0, 2], 0:5], rtol=0, atol=1e-10)
        assert grads[layer].abs().sum() > 0


def test_grad_capture_with_frozen_first_block():
    """Fine-tuning with --train.freeze embeddings,blocks.0: nothing below block 0's attention needs
    a gradient, yet its weight gradient is still exact (the report's gradient rollout needs it)."""
    model = _model().double()
    frozen = [p for name, p in model.named_parameters() if not name.startswith(("blocks.1", "blocks.2", "head", "norm"))]
    for p in frozen:
        p.requires_grad_(False)
    assert frozen
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    maps = capture(model, x, grad=True)
    maps.output[:, 0].sum().backward()
    grads = maps.grads()
    assert all(p.grad is None for p in frozen)  # capture made no frozen weight trainable
    for layer in range(3):
        out, leaf = _manual_forward(model, x, layer)
        out[:, 0].sum().backward()
        torch.testing.assert_close(grads[layer], leaf.grad, rtol=0, atol=1e-10)
        assert grads[layer].abs().sum() > 0


def test_recording_every_other_step_during_training():
    model = TinyViT()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    recorded = []
    outputs = []
    with recording(model, layers=[0, 2], heads=[1], every=2, on_record=lambda step, m: recorded.append((step, m))) as rec:
        for _ in range(4):
            out = model(torch.randn(2, 6, 16))
            outputs.append(out)
            if rec.steps % 2 == 0:  # hooks are off on the steps that are not recorded
                assert all(mod.weight_hook is None for _, mod in attention_modules(model))
            out.sum().backward()
            opt.step()
            opt.zero_grad()
    assert rec.steps == 4 and rec.num_recorded == 2
    assert [s for s, _ in recorded] == [1, 3]
    latest = rec.latest
    assert latest is recorded[-1][1]
    assert latest.names == ["blocks.0.attn", "blocks.2.attn"] and latest.maps[0].shape == (2, 1, 7, 7)
    assert not latest.maps[0].requires_grad and torch.equal(latest.output, outputs[2].detach())
    assert all(mod.weight_hook is None for _, mod in attention_modules(model))
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_recording_matches_capture_and_cleans_up_on_error():
    model = _model()
    x = torch.randn(2, 6, 16)
    with recording(model) as rec:
        with torch.no_grad():
            model(x)
    expected = capture(model, x)
    for a, b in zip(rec.latest.maps, expected.maps):
        assert torch.equal(a, b)
    with pytest.raises(KeyError):
        with recording(model):
            model(x)
            raise KeyError("stop")
    assert all(mod.weight_hook is None for _, mod in attention_modules(model))
    assert not model._forward_hooks and not model._forward_pre_hooks


class _FakeHF(nn.Module):
    """Duck-types a Hugging Face model: attentions come back only with output_attentions=True."""

    def __init__(self, none: bool = False):
        super().__init__()
        self.none = none

    def forward(self, input_ids, output_attentions=False):
        b, n = input_ids.shape
        scores = torch.randn(3, b, 2, n, n, requires_grad=True)
        atts = tuple(torch.softmax(scores[i], dim=-1) for i in range(3))
        self.last = atts
        self.mix = torch.randn(3, b, 2, n, n)
        if self.none:  # what fused ("sdpa") attention gives: None per layer (4.x) or nothing (5.x)
            return SimpleNamespace(logits=torch.randn(b, 2), attentions=(None,) * 3 if n > 1 else ())
        loss = sum((a * m).sum() for a, m in zip(atts, self.mix))  # uses the weights, like HF eager
        return SimpleNamespace(loss=loss, logits=torch.randn(b, 2), attentions=atts if output_attentions else None)


def test_capture_hf_duck_typed():
    model = _FakeHF()
    maps = capture_hf(model, {"input_ids": torch.zeros(2, 5, dtype=torch.long)}, layers=[0, "layer.2"], heads=[1], query_rows=[0, 4])
    assert maps.names == ["layer.0", "layer.2"]
    assert torch.equal(maps.maps[1], model.last[2][:, [1]][:, :, [0, 4]])
    assert maps.output.logits.shape == (2, 2)
    with pytest.raises(RuntimeError):  # captured without grad=True
        maps.grads()
    maps = capture_hf(model, {"input_ids": torch.zeros(2, 5, dtype=torch.long)}, heads=[1], query_rows=[0, 4], grad=True)
    maps.output.loss.backward()
    # d loss / d attention = the mixing tensor, sliced like the maps.
    for got, mix in zip(maps.grads(), model.mix):
        assert torch.equal(got, mix[:, [1]][:, :, [0, 4]])
    for n in (1, 3):
        with pytest.raises(ValueError, match="eager"):
            capture_hf(_FakeHF(none=True), {"input_ids": torch.zeros(1, n, dtype=torch.long)})


def test_capture_hf_with_transformers():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 50, (2, 6))
    maps = capture_hf(model, {"input_ids": ids})
    with torch.no_grad():
        ref = model(input_ids=ids, output_attentions=True).attentions
    assert maps.names == ["layer.0", "layer.1"]
    for got, want in zip(maps.maps, ref):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got.sum(-1), torch.ones(2, 2, 6))


def test_importing_explain_stays_light():
    import subprocess
    import sys

    code = "import sys, attnlab.explain; assert 'matplotlib' not in sys.modules; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_capture_inside_an_active_recording_and_the_reverse():
    """A capture (e.g. a map computed in a training loop) while ``recording`` watches the same
    model: each gets the heads and rows it asked for, whichever hook went on first."""
    model = _model()
    x = torch.randn(2, 6, 16)
    full = capture(model, x)
    with recording(model) as rec:
        sub = capture(model, x, heads=[1], query_rows=[0])
    assert len(sub) == 3 and len(rec.latest) == 3
    for got, want in zip(sub.maps, full.maps):
        assert torch.equal(got, want[:, [1]][:, :, [0]])
    for got, want in zip(rec.latest.maps, full.maps):
        assert torch.equal(got, want)  # every head and row, though the capture inside asked for fewer
    with recording(model, heads=[2]) as rec:
        inner = capture(model, x, layers=[0, 2])
    assert inner.names == ["blocks.0.attn", "blocks.2.attn"]
    assert torch.equal(inner.maps[0], full.maps[0]) and torch.equal(inner.maps[1], full.maps[2])
    assert [tuple(m.shape) for m in rec.latest.maps] == [(2, 1, 7, 7)] * 3
    assert torch.equal(rec.latest.maps[1], full.maps[1][:, [2]])
    assert all(mod.weight_hook is None and mod.weight_selection is None for _, mod in attention_modules(model))
