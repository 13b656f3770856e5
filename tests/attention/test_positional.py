"""Positional schemes against their papers' formulas."""

from __future__ import annotations

import math

import torch

from attnlab.attention import positional


def test_sinusoidal_matches_formula():
    n, d = 13, 10
    table = positional.sinusoidal(n, d)
    for p in range(n):
        for i in range(d // 2):
            angle = p / (10000 ** (2 * i / d))
            assert math.isclose(table[p, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(table[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_sincos_2d_rows_and_columns():
    table = positional.sincos_2d(3, 4, 8)
    assert table.shape == (12, 8)
    row_part, col_part = table[:, :4], table[:, 4:]
    torch.testing.assert_close(row_part[5], positional.sinusoidal(3, 4)[1])  # index 5 = row 1, col 1
    torch.testing.assert_close(col_part[6], positional.sinusoidal(4, 4)[2])  # index 6 = row 1, col 2


def test_rope_scores_depend_only_on_relative_offset():
    d = 16
    q = torch.randn(1, 1, 1, d, dtype=torch.float64)
    k = torch.randn(1, 1, 1, d, dtype=torch.float64)

    def score(pq, pk):
        cq, sq = positional.rope_cos_sin(torch.tensor([pq]), d, dtype=torch.float64)
        ck, sk = positional.rope_cos_sin(torch.tensor([pk]), d, dtype=torch.float64)
        return (positional.apply_rope(q, cq, sq) * positional.apply_rope(k, ck, sk)).sum().item()

    assert math.isclose(score(5, 2), score(105, 102), rel_tol=1e-5, abs_tol=1e-7)
    # ...and do depend on it: over eight offsets the scores spread out (two offsets alone can
    # coincide by chance, ~0.3% of random q, k).
    scores = [score(9, 9 - r) for r in range(8)]
    assert max(scores) - min(scores) > 1e-3 * max(abs(x) for x in scores)
    # Rotation preserves norms.
    c, s = positional.rope_cos_sin(torch.arange(7), d, dtype=torch.float64)
    x = torch.randn(2, 3, 7, d, dtype=torch.float64)
    torch.testing.assert_close(positional.apply_rope(x, c, s).norm(dim=-1), x.norm(dim=-1))


def test_rope_matches_complex_rotation_reference():
    d, n = 8, 5
    x = torch.randn(1, 1, n, d, dtype=torch.float64)
    c, s = positional.rope_cos_sin(torch.arange(n), d, dtype=torch.float64)
    got = positional.apply_rope(x, c, s)
    half = d // 2
    z = torch.complex(x[..., :half], x[..., half:])
    freq = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float64) * 2 / d))
    rot = torch.polar(torch.ones(n, half, dtype=torch.float64), torch.arange(n, dtype=torch.float64)[:, None] * freq)
    zr = z * rot
    torch.testing.assert_close(got, torch.cat([zr.real, zr.imag], dim=-1))


def test_alibi_slopes_from_paper():
    torch.testing.assert_close(positional.alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # Non-power-of-two: the 8 slopes of 8 heads plus every other slope of 16 heads.
    twelve = positional.alibi_slopes(12)
    sixteen = [2.0 ** (-0.5 * (i + 1)) for i in range(16)]
    torch.testing.assert_close(twelve, torch.tensor([2.0 ** -(i + 1) for i in range(8)] + sixteen[0::2][:4]))
    bias = positional.alibi_bias(8)(torch.arange(8)[:, None, None], torch.arange(4)[:, None], torch.arange(4)[None, :])
    assert bias.shape == (8, 4, 4)
    assert bias[0, 3, 0].item() == -3 * 0.5


def _t5_reference(rel: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    # Transcribed from the T5 paper's reference code (mesh-tensorflow), one scalar at a time.
    ret = 0
    n = -rel
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            ret += num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


def test_t5_buckets_match_reference():
    rel = torch.arange(-300, 300)
    for bidirectional in (True, False):
        got = positional.t5_buckets(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        want = torch.tensor([_t5_reference(int(r), bidirectional, 32, 128) for r in rel])
        assert torch.equal(got, want)
