"""MultiHeadAttention against torch.nn.MultiheadAttention, and incremental decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnlab.layers import FeedForward, KVCache, MultiHeadAttention, TransformerBlock


def _copy_from_torch(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    w_q, w_k, w_v = ref.in_proj_weight.chunk(3)
    b_q, b_k, b_v = ref.in_proj_bias.chunk(3)
    with torch.no_grad():
        ours.q_proj.weight.copy_(w_q), ours.q_proj.bias.copy_(b_q)
        ours.k_proj.weight.copy_(w_k), ours.k_proj.bias.copy_(b_k)
        ours.v_proj.weight.copy_(w_v), ours.v_proj.bias.copy_(b_v)
        ours.out_proj.weight.copy_(ref.out_proj.weight), ours.out_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parametrize("backend", ["sdpa", "chunked", "math"])
def test_matches_torch_multihead_attention(backend):
    dim, heads, b, n, m = 24, 4, 3, 7, 9
    ref = nn.MultiheadAttention(dim, heads, batch_first=True).double()
    ours = MultiHeadAttention(dim, heads, backend=backend).double()
    _copy_from_torch(ours, ref)
    x = torch.randn(b, n, dim, dtype=torch.float64)
    ctx = torch.randn(b, m, dim, dtype=torch.float64)
    padding = torch.ones(b, m, dtype=torch.bool)
    padding[0, -3:] = False
    want, want_w = ref(x, ctx, ctx, key_padding_mask=~padding, average_attn_weights=False)
    got, got_w = ours(x, ctx, mask=padding, return_weights=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_w, want_w)
    causal = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    want_c, _ = ref(x, x, x, attn_mask=causal)
    torch.testing.assert_close(ours(x, is_causal=True), want_c)


@pytest.mark.parametrize("positional", [None, "rope", "alibi", "relative"])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_kv_cache_decoding_equals_full_causal_pass(positional, kv_heads):
    torch.manual_seed(0)
    dim, heads, b, n = 32, 4, 2, 9
    mha = MultiHeadAttention(dim, heads, num_kv_heads=kv_heads, positional=positional).double().eval()
    x = torch.randn(b, n, dim, dtype=torch.float64)
    full = mha(x, is_causal=True)
    for cache in (KVCache(), KVCache(max_length=16)):
        prefix = mha(x[:, :3], is_causal=True, cache=cache)  # a prompt of 3 tokens at once
        steps = [prefix] + [mha(x[:, t : t + 1], is_causal=True, cache=cache) for t in range(3, n)]
        torch.testing.assert_close(torch.cat(steps, dim=1), full)
        assert len(cache) == n


def test_cross_attention_cache_reuses_encoder_keys_and_reorders():
    dim, heads = 16, 2
    block = TransformerBlock(dim, heads, cross_attention=True).double().eval()
    x = torch.randn(3, 5, dim, dtype=torch.float64)
    memory = torch.randn(3, 6, dim, dtype=torch.float64)
    full = block(x, memory, is_causal=True)
    self_cache, cross_cache = KVCache(), KVCache()
    outs = [block(x[:, t : t + 1], memory, is_causal=True, cache=self_cache, cross_cache=cross_cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(outs, dim=1), full)
    order = torch.tensor([2, 0, 1])
    before_k, before_v = self_cache.keys.clone(), self_cache.values.clone()
    self_cache.reorder(order)
    assert torch.equal(self_cache.keys, before_k[order]) and torch.equal(self_cache.values, before_v[order])


def test_weight_hook_receives_exact_weights():
    mha = MultiHeadAttention(16, 2).eval()
    seen = []
    mha.weight_hook = lambda module, w: seen.append(w)
    x = torch.randn(2, 5, 16)
    out = mha(x)
    _, w = mha(x, return_weights=True)
    assert len(seen) == 2 and seen[0].shape == (2, 2, 5, 5)
    torch.testing.assert_close(seen[0], w)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5))
    assert out.shape == x.shape


def test_block_pre_and_post_norm_formulas():
    dim = 8
    x = torch.randn(2, 4, dim, dtype=torch.float64)
    for norm_first in (True, False):
        block = TransformerBlock(dim, 2, norm_first=norm_first, mlp_ratio=2.0).double().eval()
        if norm_first:
            h = x + block.attn(block.norm1(x))
            want = h + block.mlp(block.norm2(h))
        else:
            h = block.norm1(x + block.attn(x))
            want = block.norm2(h + block.mlp(h))
        torch.testing.assert_close(block(x), want)


def test_feedforward_swiglu_formula():
    ff = FeedForward(6, 10, activation="swiglu").double()
    x = torch.randn(3, 6, dtype=torch.float64)
    w1, b1 = ff.fc1.weight, ff.fc1.bias
    gate = x @ w1[:10].T + b1[:10]
    value = x @ w1[10:].T + b1[10:]
    want = (gate * torch.sigmoid(gate) * value) @ ff.fc2.weight.T + ff.fc2.bias
    torch.testing.assert_close(ff(x), want)


def test_module_bad_inputs():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        MultiHeadAttention(12, 4, num_kv_heads=3)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x must be \(B, N, C=8\), got shape \(2, 3, 5\)"):
        mha(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"key padding mask must have shape \(B, M\) = \(2, 3\), got \(2, 4\)"):
        mha(torch.randn(2, 3, 8), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        mha(torch.randn(2, 3, 8), mask=torch.ones(2, 3))


@pytest.mark.parametrize("kv_heads,qkv_bias", [(4, True), (2, True), (4, False)])
def test_fused_qkv_product_equals_three_projections(kv_heads, qkv_bias):
    """The stacked q/k/v product is a speed route only: same output and gradients (float64)."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, num_kv_heads=kv_heads, qkv_bias=qkv_bias).double().train()
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    mask = torch.rand(2, 7) > 0.2
    results = []
    for fused in (True, False):
        attn.fuse_qkv = fused
        assert attn._fusable() is fused
        xi = x.clone().requires_grad_(True)
        out = attn(xi, mask=mask)
        grads = torch.autograd.grad(out.square().sum(), [xi, *attn.parameters()])
        results.append((out, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_qkv_is_not_used_where_it_would_hide_or_cost():
    attn = MultiHeadAttention(16, 2).train()
    assert not attn._fusable()  # off by default: it did not measurably pay (benchmarks/README.md, mfu.py)
    attn.fuse_qkv = True
    assert attn._fusable()
    attn.eval()
    assert not attn._fusable()  # eval / decoding: would re-stack the weights every call
    attn.train()
    with torch.no_grad():
        assert not attn._fusable()
    handle = attn.v_proj.register_forward_hook(lambda *args: None)  # explain/ captures v_proj's output
    assert not attn._fusable()
    handle.remove()
    assert attn._fusable()


def test_fused_qkv_is_switched_on_by_the_environment(monkeypatch):
    monkeypatch.setenv("ATTNLAB_FUSED_QKV", "1")
    assert MultiHeadAttention(16, 2).train()._fusable()
    monkeypatch.setenv("ATTNLAB_FUSED_QKV", "0")
    assert not MultiHeadAttention(16, 2).train()._fusable()


def _scored_reference(attn, x, bias):
    """(out, scores) of MultiHeadAttention(x, bias=bias, return_scores=True) from its weights, float64."""
    b, n, _ = x.shape
    rep = attn.num_heads // attn.num_kv_heads
    q = attn._split(attn.q_proj(x), attn.num_heads)
    k, v = (attn._split(p(x), attn.num_kv_heads).repeat_interleave(rep, dim=1) for p in (attn.k_proj, attn.v_proj))
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim) + (0 if bias is None else bias)
    out = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, n, attn.dim)
    return attn.out_proj(out), scores


@pytest.mark.parametrize("kv_heads, bias_shape", [(4, (3, 4, 7, 7)), (2, (3, 4, 7, 7)), (4, (4, 7, 7)), (4, None)])
def test_return_scores_values_and_gradients_match_float64(kv_heads, bias_shape):
    """Residual attention's path (one product for the scores, softmax, product) against plain ops:
    outputs, scores and the gradients of x, the bias and every weight."""
    torch.manual_seed(7)
    attn = MultiHeadAttention(16, 4, num_kv_heads=kv_heads).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    bias = None if bias_shape is None else torch.randn(*bias_shape, dtype=torch.float64, requires_grad=True)
    out, scores = attn(x, bias=bias, return_scores=True)
    g_out, g_scores = torch.randn_like(out), torch.randn_like(scores)
    leaves = [x] + ([] if bias is None else [bias]) + list(attn.parameters())
    grads = torch.autograd.grad((out * g_out).sum() + (scores * g_scores).sum(), leaves)
    ref_out, ref_scores = _scored_reference(attn, x, bias)
    ref_grads = torch.autograd.grad((ref_out * g_out).sum() + (ref_scores * g_scores).sum(), leaves)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_return_scores_with_an_all_minus_inf_bias_row_gives_zeros_not_nan():
    torch.manual_seed(8)
    attn = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    bias = torch.zeros(2, 2, 5, 5)
    bias[1, 0, 3] = float("-inf")  # query 3 of head 0 may attend to nothing
    out, scores = attn(x, bias=bias, return_scores=True)
    assert torch.isfinite(out).all()
    v = attn._split(attn.v_proj(x), 2)
    heads = torch.softmax(scores, -1).nan_to_num(0.0) @ v  # the empty row contributes zeros
    expected = attn.out_proj(heads.transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
