"""Padding-free blocks (attnlab.layers.packing): each sentence computed alone is the reference."""

from __future__ import annotations

import pytest
import torch

from attnlab.layers import MultiHeadAttention, TransformerBlock
from attnlab.layers.packing import MIN_PADDING, UNPAD_ENV, Packing, packing_for


def _padding_mask(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, N) True = real


def test_pack_and_unpack_move_the_real_rows():
    mask = _padding_mask([3, 1, 4], 4)
    x = torch.randn(3, 4, 5)
    packing = Packing.of(mask)
    packed = packing.pack(x)
    torch.testing.assert_close(packed, x[mask], rtol=0, atol=0)  # boolean indexing: batch-major order
    back = packing.unpack(packed)
    torch.testing.assert_close(back[mask], x[mask], rtol=0, atol=0)
    assert back[~mask].abs().sum() == 0


@pytest.mark.parametrize("positional,kv_heads,norm_first", [(None, 4, True), ("rope", 2, False)])
def test_a_packed_block_computes_each_sentence_as_if_alone(positional, kv_heads, norm_first):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, num_kv_heads=kv_heads, positional=positional, norm_first=norm_first).double()
    lengths = [5, 2, 7, 3]
    mask = _padding_mask(lengths, 7)
    x = torch.randn(4, 7, 16, dtype=torch.float64, requires_grad=True)
    packing = Packing.of(mask)
    out = block(packing.pack(x), mask=mask, packing=packing)  # (T, 16)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    got_grads = {name: p.grad.clone() for name, p in block.named_parameters()}
    block.zero_grad()
    rows, start = [], 0
    for i, n in enumerate(lengths):  # the reference: every sentence alone, no padding, no mask
        alone = block(x[i : i + 1, :n])[0]
        rows.append(alone)
        (alone * upstream[start : start + n]).sum().backward()
        start += n
    torch.testing.assert_close(out, torch.cat(rows), rtol=1e-10, atol=1e-10)
    for name, p in block.named_parameters():
        torch.testing.assert_close(got_grads[name], p.grad, rtol=1e-9, atol=1e-10, msg=name)
    assert x.grad[~mask].abs().sum() == 0  # padding took no part


def test_packing_is_used_only_where_it_pays_and_nothing_watches(monkeypatch):
    blocks = torch.nn.ModuleList([TransformerBlock(8, 2)])
    x = torch.zeros(4, 10, 8)
    half = _padding_mask([10, 5, 5, 10], 10)
    assert packing_for(half, x, blocks) is not None
    assert packing_for(None, x, blocks) is None
    little = _padding_mask([10, 10, 10, 10 - int(MIN_PADDING * 40) + 1], 10)  # under MIN_PADDING padded
    assert packing_for(little, x, blocks) is None
    assert packing_for(torch.zeros(4, 10, dtype=torch.bool), x, blocks) is None  # nothing real
    monkeypatch.setenv(UNPAD_ENV, "0")
    assert packing_for(half, x, blocks) is None
    monkeypatch.delenv(UNPAD_ENV)
    handle = blocks[0].attn.v_proj.register_forward_hook(lambda *a: None)  # explain/ reads (B, N, C)
    assert packing_for(half, x, blocks) is None
    handle.remove()
    blocks[0].attn.weight_hook = lambda module, weights: None
    assert packing_for(half, x, blocks) is None


def test_packing_refuses_what_it_cannot_do():
    attn = MultiHeadAttention(8, 2)
    mask = _padding_mask([3, 1], 4)
    packing = Packing.of(mask)
    with pytest.raises(ValueError, match=r"packed x must be \(T=4, C=8\)"):
        attn(torch.randn(2, 4, 8), mask=mask, packing=packing)
    with pytest.raises(ValueError, match="packing needs self-attention"):
        attn(torch.randn(4, 8), torch.randn(2, 3, 8), packing=packing)
    cross = TransformerBlock(8, 2, cross_attention=True)
    with pytest.raises(ValueError, match="packing is for self-attention blocks"):
        cross(torch.randn(4, 8), torch.randn(2, 3, 8), mask=mask, packing=packing)
