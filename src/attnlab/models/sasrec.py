"""SASRec: self-attentive sequential recommendation (Kang & McAuley 2018, ICDM).

A user's item history goes through causal self-attention; the state at position t scores
candidates for the item at t + 1 by a dot product with the *same* item embedding table the
input uses (the paper's shared embedding, which it finds both smaller and better).

Faithful to the paper and its code: item embeddings scaled by sqrt(d) on input, learned
absolute positions, dropout on embeddings, residual branches and attention weights,
LayerNorm before each sub-layer and once at the end, a point-wise feed-forward of width d
with ReLU, Glorot-initialised embedding tables. One deliberate difference: the paper
zeroes padded positions and lets queries attend to them; here a key-padding mask keeps them
out of attention altogether (``attnlab.explain`` then shows attention over real items only).
The block (``block="paper"``, ``PaperBlock``) follows the code, not the textbook pre-norm
block: the residuals add the *normalised* input, and keys/values are the raw input.

Histories are left-padded with item 0, so position N - 1 always holds the most recent item;
a history shorter than ``max_len`` uses the last positions of the table (right-aligned), so a
position embedding always means "so many steps before the prediction".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, TransformerBlock
from attnlab.models.registry import register_model

__all__ = ["SASRecConfig", "SASRec", "PaperBlock", "NextItemScores", "sasrec_example"]


def sasrec_example(config: "SASRecConfig", batch: int = 2) -> tuple[Tensor]:
    """Random left-padded histories that fit a config: (B, max_len) int64, first row half padding."""
    seq = torch.randint(1, config.num_items + 1, (batch, config.max_len))
    seq[0, : config.max_len // 2] = 0
    return (seq,)


@dataclass
class SASRecConfig:
    """Defaults: the paper's setting for its sparse data sets (Beauty, Games, Steam)."""

    num_items: int = 100  # set from the data: ids 1..num_items, 0 = padding
    max_len: int = 50
    dim: int = 50
    depth: int = 2
    num_heads: int = 1
    mlp_ratio: float = 1.0  # the paper's feed-forward is d -> d -> d
    dropout: float = 0.5  # the paper: 0.5 on sparse data, 0.2 on MovieLens-1M
    attn_dropout: float = 0.5  # the paper's code drops attention weights at the same rate
    activation: str = "relu"
    # "paper": the block of the paper's code (kang205/SASRec, model.py): queries and both residuals
    # come from the normalised input, keys and values from the raw one. "pre-norm": a standard
    # pre-norm Transformer block (x + attn(LN x), x + ffn(LN x)).
    block: str = "paper"

    def __post_init__(self) -> None:
        check_positive("SASRecConfig", num_items=self.num_items, max_len=self.max_len, dim=self.dim, depth=self.depth,
                       num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        for name in ("num_items", "max_len", "dim", "depth", "num_heads"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"SASRecConfig.{name} must be an integer, got {getattr(self, name)!r}")
        if self.dim % self.num_heads:
            raise ConfigError(f"SASRecConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"SASRecConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        check_choice("SASRecConfig", "block", self.block, ("paper", "pre-norm"))
        check_choice("SASRecConfig", "activation", self.activation, ("relu", "gelu"))


class PaperBlock(TransformerBlock):
    """The SASRec code's block: q = LN1(x); x = q + attn(q, keys = values = x); h = LN2(x);
    out = h + ffn(h). Attention dropout on the weights only, dropout inside and after the
    feed-forward. Same parameters as a pre-norm ``TransformerBlock``.

    Shape: x (B, N, C), mask (B, N) True at real items -> (B, N, C).
    """

    def forward(self, x: Tensor, *, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:  # type: ignore[override]
        q = self.norm1(x)
        x = q + self.attn(q, x, mask=mask, is_causal=is_causal)  # (B, N, C)
        h = self.norm2(x)
        return h + self._drop(self.mlp(h))


class SASRec(nn.Module):
    """Shape: item histories (B, N) int64, N <= max_len, 0 = padding -> states (B, N, C).

    ``states[:, t]`` scores the item that follows ``seq[:, t]``; see ``score``.
    """

    def __init__(self, config: SASRecConfig):
        super().__init__()
        c = config
        self.config = c
        self.item_embed = nn.Embedding(c.num_items + 1, c.dim, padding_idx=0)
        self.pos_embed = nn.Parameter(torch.empty(c.max_len, c.dim))
        self.dropout = Dropout(c.dropout)
        block = PaperBlock if c.block == "paper" else TransformerBlock
        self.blocks = nn.ModuleList(
            block(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, attn_dropout=c.attn_dropout,
                             activation=c.activation, norm_first=True)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)
        # The paper's code (TensorFlow) initialises both tables with Glorot-uniform; with
        # 23k items that is std ~0.01, so the sqrt(d) input scale keeps items and positions
        # on comparable footing early in training.
        nn.init.xavier_uniform_(self.item_embed.weight)
        nn.init.xavier_uniform_(self.pos_embed)
        with torch.no_grad():
            self.item_embed.weight[0].zero_()

    def embed(self, seq: Tensor) -> Tensor:
        """Item embeddings (scaled by sqrt(d), as the paper) plus positions, then dropout.

        Shape: (B, N) int64 -> (B, N, C).
        """
        c = self.config
        if seq.dim() != 2 or seq.dtype not in (torch.int64, torch.int32) or seq.shape[1] > c.max_len:
            raise ValueError(f"SASRec expects item ids (B, N <= {c.max_len}) int64, got {tuple(seq.shape)} {seq.dtype}")
        n = seq.shape[1]
        x = self.item_embed(seq) * math.sqrt(c.dim)  # (B, N, C)
        # right-aligned positions (N, C); [-n:], not [max_len - n:]: an exported graph (no check above) given
        # N > max_len then fails on the shapes instead of slicing one row from the end and broadcasting it
        x = x + (self.pos_embed[-n:] if n else self.pos_embed[:0]).to(x.dtype)
        return self.dropout(x)

    def encode(self, x: Tensor, keep: Tensor) -> Tensor:
        """Causal blocks over embedded items; ``keep`` (B, N) is True at real items.

        Shape: x (B, N, C), keep (B, N) bool -> states (B, N, C).
        """
        for block in self.blocks:
            x = block(x, mask=keep, is_causal=True)  # (B, N, C)
        return self.norm(x)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed (the position table; timm's convention)."""
        return {"pos_embed"}

    def forward(self, seq: Tensor) -> Tensor:
        return self.encode(self.embed(seq), seq != 0)

    def score(self, states: Tensor, items: Tensor) -> Tensor:
        """Dot products of states with candidate items' embeddings (the shared table).

        Shape: states (..., C), items (..., K) int64 -> (..., K). E.g. the last position
        (B, C) against candidates (B, K); or every position (B, N, C) against
        (B, N, 2) positive/negative pairs.
        """
        return (self.item_embed(items) * states.unsqueeze(-2)).sum(-1)  # (..., K)

    def score_all(self, states: Tensor) -> Tensor:
        """Scores of every item id, padding included (column 0). Shape: (B, C) -> (B, num_items + 1)."""
        return states @ self.item_embed.weight.t()


class NextItemScores(nn.Module):
    """What ``attnlab predict`` ranks, as one forward for ONNX export: every item's score as the
    next after each history (column 0 is padding). The hidden states alone rank nothing without
    the shared item table, which an exported graph keeps inside.

    Shape: seq (B, N) int64, left-padded with 0 -> (B, num_items + 1).
    """

    def __init__(self, model: SASRec):
        super().__init__()
        self.model = model

    def forward(self, seq: Tensor) -> Tensor:
        return self.model.score_all(self.model(seq)[:, -1])  # (B, num_items + 1)


@register_model("sasrec", config=SASRecConfig, example_inputs=sasrec_example, export_module=NextItemScores,
                description="SASRec, 2 causal blocks x 50 wide, shared item embeddings (Kang & McAuley 2018)")
def sasrec(config: SASRecConfig) -> SASRec:
    return SASRec(config)
