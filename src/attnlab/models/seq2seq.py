"""Encoder-decoder Transformer for translation (Vaswani et al. 2017, "Attention Is All You Need").

Source ids (B, M) -> encoder -> memory (B, M, C); target ids (B, N) -> causal decoder blocks
with cross-attention to the memory -> logits (B, N, V_tgt). Embeddings are scaled by
sqrt(dim) and sinusoidal positions added (as in the paper and fairseq). Vocabularies are
shared (one table for source, target and output: ``share_embeddings``, Press & Wolf 2017) or
separate, with the decoder's output projection optionally tied to its input embedding
(``tie_embeddings``).

Decoding (``attnlab.models.generation``: greedy and beam search, batched) calls ``encode`` once and
``decode`` one step at a time with a self-attention ``KVCache`` per decoder block, plus a
cross-attention cache per block that holds the memory's keys/values after the first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, KVCache, LearnedPositionalEmbedding, Linear, SinusoidalPositionalEmbedding, TransformerBlock
from attnlab.layers.packing import run_blocks
from attnlab.models.registry import register_model

__all__ = ["Seq2SeqConfig", "Seq2SeqTransformer", "DecoderState"]



def _pair_example(config, batch: int = 2) -> tuple[Tensor, Tensor]:
    src = torch.randint(4, config.src_vocab_size, (batch, 7))
    src[-1, 4:] = config.pad_id
    tgt = torch.randint(4, config.tgt_vocab_size, (batch, 5))
    tgt[:, 0] = config.bos_id
    return src, tgt


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 1000  # set from the tokenizer(s)
    tgt_vocab_size: int = 1000
    max_length: int = 256  # positions
    dim: int = 256
    encoder_depth: int = 3
    decoder_depth: int = 3
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    attn_dropout: float = 0.0
    activation: str = "relu"
    pos_embed: str = "sincos"  # "sincos" | "learned"
    norm_first: bool = True
    share_embeddings: bool = True  # one table for source, target and output (needs one vocabulary)
    tie_embeddings: bool = True  # decoder output projection = decoder input embedding
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        check_positive("Seq2SeqConfig", src_vocab_size=self.src_vocab_size, tgt_vocab_size=self.tgt_vocab_size,
                       max_length=self.max_length, dim=self.dim, encoder_depth=self.encoder_depth,
                       decoder_depth=self.decoder_depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
        check_choice("Seq2SeqConfig", "pos_embed", self.pos_embed, ("sincos", "learned"))
        check_choice("Seq2SeqConfig", "activation", self.activation, ("gelu", "gelu_tanh", "relu", "swiglu"))
        if self.dim % self.num_heads:
            raise ConfigError(f"Seq2SeqConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                f"Seq2SeqConfig: share_embeddings needs one vocabulary, got {self.src_vocab_size} source vs "
                f"{self.tgt_vocab_size} target ids; set share_embeddings false"
            )
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < min(self.src_vocab_size, self.tgt_vocab_size):
                raise ConfigError(f"Seq2SeqConfig.{name}={getattr(self, name)} is outside the vocabulary")
        for name in ("dropout", "attn_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"Seq2SeqConfig.{name} must be in [0, 1), got {getattr(self, name)}")


class DecoderState:
    """What incremental decoding carries between steps: memory, its padding mask and the caches.

    ``reorder(index)`` selects batch rows (beam search) in every tensor and cache.
    Shape: memory (B, M, C), memory_mask (B, M).
    """

    def __init__(self, memory: Tensor, memory_mask: Tensor, depth: int):
        self.memory = memory
        self.memory_mask = memory_mask
        self.self_caches = KVCache.for_layers(depth)
        self.cross_caches = KVCache.for_layers(depth)

    @property
    def length(self) -> int:
        return len(self.self_caches[0])

    def reorder(self, index: Tensor) -> None:
        self.memory = self.memory.index_select(0, index)
        self.memory_mask = self.memory_mask.index_select(0, index)
        for cache in (*self.self_caches, *self.cross_caches):
            cache.reorder(index)


class Seq2SeqTransformer(nn.Module):
    """Shape: src (B, M), tgt_in (B, N) int64 -> logits (B, N, V_tgt)."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = self.config = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.dim, padding_idx=c.pad_id)
        self.tgt_embed = self.src_embed if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.dim, padding_idx=c.pad_id)
        positions = LearnedPositionalEmbedding if c.pos_embed == "learned" else SinusoidalPositionalEmbedding
        self.pos_embed = positions(c.max_length, c.dim)
        self.embed_scale = math.sqrt(c.dim)
        self.dropout = Dropout(c.dropout)

        def block(cross: bool) -> TransformerBlock:
            return TransformerBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, attn_dropout=c.attn_dropout,
                                    norm_first=c.norm_first, activation=c.activation, cross_attention=cross)

        self.encoder_blocks = nn.ModuleList(block(False) for _ in range(c.encoder_depth))
        self.decoder_blocks = nn.ModuleList(block(True) for _ in range(c.decoder_depth))
        self.encoder_norm = nn.LayerNorm(c.dim) if c.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(c.dim) if c.norm_first else nn.Identity()
        self.out_proj = Linear(c.dim, c.tgt_vocab_size, bias=False)
        self._init_weights()
        if c.tie_embeddings or c.share_embeddings:
            self.out_proj.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Embeddings scaled by sqrt(dim) start at unit scale (fairseq's N(0, dim^-1/2)).
        for emb in {id(self.src_embed): self.src_embed, id(self.tgt_embed): self.tgt_embed}.values():
            nn.init.normal_(emb.weight, std=self.config.dim ** -0.5)
            with torch.no_grad():
                emb.weight[self.config.pad_id].zero_()

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Shape: src (B, M) -> memory (B, M, C), padding mask (B, M) with True = real token."""
        if src.dim() != 2:
            raise ValueError(f"Seq2SeqTransformer expects source ids (B, M), got shape {tuple(src.shape)}")
        mask = src != self.config.pad_id  # (B, M)
        x = self.dropout(self.pos_embed(self.src_embed(src) * self.embed_scale))
        return run_blocks(self.encoder_blocks, x, mask, self.encoder_norm), mask  # padding-free when it pays

    def decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor, *, state: DecoderState | None = None) -> Tensor:
        """Target ids -> logits. With ``state``, ``tgt`` holds only the new positions (B, n).

        Shape: tgt (B, N), memory (B, M, C), memory_mask (B, M) -> logits (B, N, V).
        Target padding needs no mask: it sits after the real tokens, which a causal mask
        already keeps from seeing it.
        """
        offset = state.length if state is not None else 0
        x = self.dropout(self.pos_embed(self.tgt_embed(tgt) * self.embed_scale, offset=offset))
        for i, blk in enumerate(self.decoder_blocks):
            if state is None:
                x = blk(x, memory, context_mask=memory_mask, is_causal=True)
            else:
                cross = state.cross_caches[i]
                # Once the cross cache holds the memory's keys/values the block reads them from
                # the cache; a one-position context then spares re-projecting the memory each step.
                context = memory if len(cross) == 0 else memory[:, :1]
                x = blk(x, context, context_mask=memory_mask, is_causal=True, cache=state.self_caches[i], cross_cache=cross)
        return self.out_proj(self.decoder_norm(x))  # (B, N, V)

    def start_decoding(self, src: Tensor) -> DecoderState:
        memory, mask = self.encode(src)
        return DecoderState(memory, mask, len(self.decoder_blocks))

    def step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """One incremental step. Shape: tokens (B, n) -> logits of the last position (B, V)."""
        return self.decode(tokens, state.memory, state.memory_mask, state=state)[:, -1]

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)


@register_model(
    "transformer-mt", config=Seq2SeqConfig, example_inputs=_pair_example,
    description="encoder-decoder translator: label smoothing, greedy / beam search with KV cache, shared + tied embeddings",
)
def transformer_mt(config: Seq2SeqConfig) -> Seq2SeqTransformer:
    return Seq2SeqTransformer(config)
