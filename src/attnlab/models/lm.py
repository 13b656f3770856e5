"""Decoder-only Transformer language model (Radford et al. 2018/2019, GPT; nanoGPT's layout).

Token ids (B, N) -> token + position embedding -> causal pre-norm blocks -> LayerNorm ->
logits over the vocabulary (B, N, V), the output projection tied to the token embedding by
default (Press & Wolf 2017). Incremental decoding passes one ``KVCache`` per block
(``new_caches``): positions continue from the cache length, and the causal mask is aligned
bottom-right by ``attention`` (x-transformers #187), so a cached step gives the logits a
full recompute would. Sampling lives in ``attnlab.models.generation``.

GPT-2 compatibility (``attnlab.interop.load_hf_gpt2``): learned positions, pre-norm,
``activation="gelu_tanh"`` (GPT-2's ``gelu_new``), LayerNorm eps 1e-5, tied embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, KVCache, LearnedPositionalEmbedding, Linear, SinusoidalPositionalEmbedding, TransformerBlock
from attnlab.models.layer_ids import layer_id_by_prefix
from attnlab.models.registry import register_model
from attnlab.models.text import init_text_weights

__all__ = ["LanguageModelConfig", "TransformerLM"]

POS_EMBEDS = ("learned", "sincos", "rope", "alibi", "none")
_IN_ATTENTION = {"rope": "rope", "alibi": "alibi"}


def _lm_example(config, batch: int = 2) -> tuple[Tensor]:
    return (torch.randint(0, config.vocab_size, (batch, min(10, config.max_length))),)


@dataclass
class LanguageModelConfig:
    vocab_size: int = 256  # set from the tokenizer
    max_length: int = 64  # context length (block size)
    dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    mlp_dropout: float | None = None  # on the feed-forward's hidden units; None = dropout (GPT-2: 0)
    pos_embed: str = "learned"  # see POS_EMBEDS; rope / alibi extend past max_length when sampling
    activation: str = "gelu"  # "gelu" | "gelu_tanh" (GPT-2) | "relu" | "swiglu"
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        check_positive("LanguageModelConfig", vocab_size=self.vocab_size, max_length=self.max_length, dim=self.dim,
                       depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio, norm_eps=self.norm_eps)
        check_choice("LanguageModelConfig", "pos_embed", self.pos_embed, POS_EMBEDS)
        check_choice("LanguageModelConfig", "activation", self.activation, ("gelu", "gelu_tanh", "relu", "swiglu"))
        if self.dim % self.num_heads:
            raise ConfigError(f"LanguageModelConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.pos_embed == "rope" and (self.dim // self.num_heads) % 2:
            raise ConfigError(f"LanguageModelConfig: rope needs an even head dim, got {self.dim // self.num_heads}")
        for name in ("dropout", "attn_dropout", "mlp_dropout"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"LanguageModelConfig.{name} must be in [0, 1), got {getattr(self, name)}")


class TransformerLM(nn.Module):
    """Shape: tokens (B, N) int64 -> logits (B, N, V)."""

    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        c = self.config = config
        self.token_embed = nn.Embedding(c.vocab_size, c.dim)
        if c.pos_embed == "learned":
            self.pos_embed: nn.Module | None = LearnedPositionalEmbedding(c.max_length, c.dim)
        elif c.pos_embed == "sincos":
            self.pos_embed = SinusoidalPositionalEmbedding(c.max_length, c.dim)
        else:
            self.pos_embed = None
        self.dropout = Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, attn_dropout=c.attn_dropout,
                             mlp_dropout=c.mlp_dropout, activation=c.activation, positional=_IN_ATTENTION.get(c.pos_embed), qkv_bias=c.qkv_bias,
                             norm_eps=c.norm_eps)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.lm_head = Linear(c.dim, c.vocab_size, bias=False)
        self.apply(init_text_weights)
        # GPT-2: residual output projections scaled by 1/sqrt(2 * depth) at initialisation.
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, std=0.02 / math.sqrt(2 * c.depth))
            nn.init.normal_(block.mlp.fc2.weight, std=0.02 / math.sqrt(2 * c.depth))
        if c.tie_embeddings:
            self.lm_head.weight = self.token_embed.weight

    @property
    def context_length(self) -> int | None:
        """Longest sequence the positions allow (None: unbounded, for RoPE / ALiBi / none)."""
        return self.config.max_length if self.pos_embed is not None else None

    def new_caches(self, max_length: int | None = None) -> list[KVCache]:
        """One cache per block; ``max_length`` preallocates (no copy of the cache per token)."""
        return KVCache.for_layers(len(self.blocks), max_length)

    @property
    def num_layers(self) -> int:
        """Blocks, for layer-wise lr decay and ``--train.freeze blocks.I-J`` (`attnlab.training.param_groups`)."""
        return self.config.depth

    def layer_id(self, name: str) -> int:
        """0: token and position embeddings (with a tied head, its weight is the token table);
        ``i + 1``: block ``i``; ``depth + 1``: final norm and an untied head."""
        return layer_id_by_prefix(name, self.config.depth, after=("norm.", "lm_head."))

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed (the token embedding; a learned position table declares its own; timm's convention)."""
        return {"token_embed.weight"}

    def forward(self, tokens: Tensor, *, caches: list[KVCache] | None = None, last_only: bool = False,
                mask: Tensor | None = None) -> Tensor:
        """Logits (B, N, V); ``last_only``: only the last position's, (B, 1, V) (decoding).

        ``mask`` (B, M) bool, True = a real token, over the cached positions and these N (M =
        cache length + N): padding is never attended to, and each token's position counts the
        real tokens before it, so a left-padded row gives the logits it gives unpadded (what
        Hugging Face derives from ``attention_mask``: position_ids = cumsum - 1). Pad rows' own
        outputs are meaningless (a pad query with nothing to attend to outputs zeros).
        """
        if tokens.dim() != 2:
            raise ValueError(f"TransformerLM expects token ids (B, N), got shape {tuple(tokens.shape)}")
        if caches is not None and len(caches) != len(self.blocks):
            raise ValueError(f"TransformerLM: {len(caches)} caches for {len(self.blocks)} blocks")
        offset = len(caches[0]) if caches is not None else 0
        b, n = tokens.shape
        positions = None
        if mask is not None:
            if mask.shape != (b, offset + n) or mask.dtype != torch.bool:
                raise ValueError(f"TransformerLM: mask must be bool (B={b}, cached + new = {offset + n}), got "
                                 f"{mask.dtype} of shape {tuple(mask.shape)}")
            positions = (mask.long().cumsum(-1) - 1).clamp_min(0)[:, offset:]  # (B, N)
        x = self.token_embed(tokens)  # (B, N, C)
        if self.pos_embed is not None:
            x = self.pos_embed(x, offset=offset, positions=positions)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, is_causal=True, cache=None if caches is None else caches[i])
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))  # (B, N, V)


@register_model(
    "gpt-lm", config=LanguageModelConfig, example_inputs=_lm_example,
    description="decoder-only LM (GPT), 4 layers x 128 wide, context 64: nanoGPT's CPU shakespeare config",
)
def gpt_lm(config: LanguageModelConfig) -> TransformerLM:
    return TransformerLM(config)
