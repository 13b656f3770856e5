"""Transformer encoder for text classification (Vaswani et al. 2017; BERT-style, Devlin et al. 2019).

Token ids (B, N) -> token embedding (+ learned or sin-cos positions, + optional token types)
-> Transformer encoder blocks (padding masked) -> pooled -> linear head. Padding is the id
``pad_id``; the key-padding mask comes from the ids, so the forward takes one tensor and the
explain tools can call it as they call a ViT. ``pooling="first"`` reads the first token (the
``<bos>`` the text tasks prepend, BERT's ``[CLS]``), ``"mean"`` averages the real tokens and
``"max"`` takes their per-feature maximum (max-over-time pooling, Kim 2014). ``conv_kernel``
adds a residual convolution over the embeddings (local n-gram features, as the convolutional
tokenizer of Compact Transformers, Hassani et al. 2021), which small data sets need.
``conv_widths`` adds Kim 2014's n-gram detectors on top of the encoder: per width k,
``conv_channels`` filters over the encoder's output, ReLU, max over time; their features join
the pooled vector before the head. ``word_dropout`` replaces each real token (not the first,
the ``<bos>``) by ``unk_id`` with that probability while training (Iyyer et al. 2015), and
``head_dropout`` (default: ``dropout``) is the dropout on the head's input (Kim uses 0.5).

The options that a BERT checkpoint needs (``attnlab.interop.load_hf_bert``): post-norm blocks
(``norm_first=False``), a LayerNorm after the embeddings (``embed_norm``), token types
(``type_vocab_size``), learned positions, LayerNorm eps 1e-12, and the tanh pooler
(``pooler=True``) before the classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.config import check_choice, check_positive
from attnlab.errors import ConfigError
from attnlab.layers import Dropout, LearnedPositionalEmbedding, Linear, SinusoidalPositionalEmbedding, TransformerBlock
from attnlab.layers.packing import run_blocks
from attnlab.models.registry import register_model

__all__ = ["TextClassifierConfig", "TextEncoder", "TextClassifier", "init_text_weights"]

POS_EMBEDS = ("learned", "sincos", "rope", "alibi", "relative", "none")
IN_ATTENTION = {"rope": "rope", "alibi": "alibi", "relative": "relative"}
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "swiglu")  # gelu_tanh: HF's gelu_new / gelu_pytorch_tanh


def _tokens_example(config, batch: int = 2) -> tuple[Tensor]:
    n = min(12, config.max_length)
    tokens = torch.randint(4, config.vocab_size, (batch, n))
    tokens[-1, n // 2 :] = config.pad_id  # a padded row
    return (tokens,)


@dataclass
class TextClassifierConfig:
    vocab_size: int = 1000  # set from the tokenizer
    num_classes: int = 2  # set from the data
    max_length: int = 128  # positions (learned / sin-cos tables)
    dim: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    attn_dropout: float = 0.0
    mlp_dropout: float | None = None  # on the feed-forward's hidden units; None = dropout (BERT: 0)
    embed_dropout: float = 0.1
    pos_embed: str = "learned"  # see POS_EMBEDS
    pooling: str = "first"  # "first" (<bos> / [CLS]) | "mean" | "max" (over real tokens; max as Kim 2014's CNN)
    norm_first: bool = True  # pre-norm; False = post-norm (Vaswani 2017, BERT)
    activation: str = "gelu"
    norm_eps: float = 1e-5
    embed_norm: bool = False  # LayerNorm after the embeddings (BERT)
    embed_scale: bool = False  # multiply token embeddings by sqrt(dim) (Vaswani 2017)
    type_vocab_size: int = 0  # > 0: token-type embeddings (BERT segments), type 0 everywhere
    pooler: bool = False  # BERT pooler: dense + tanh on the pooled vector
    conv_kernel: int = 0  # > 0: a residual 1-D convolution over the embeddings (n-gram features; CCT)
    conv_widths: tuple[int, ...] = ()  # Kim 2014 n-gram filters over the encoder output, max over time; () = none
    conv_channels: int = 100  # filters per width of conv_widths
    word_dropout: float = 0.0  # training: probability of replacing a token (not the first) by unk_id
    head_dropout: float | None = None  # dropout before the head; None = dropout
    pad_id: int = 0
    unk_id: int = 1

    def __post_init__(self) -> None:
        check_positive("TextClassifierConfig", vocab_size=self.vocab_size, num_classes=self.num_classes,
                       max_length=self.max_length, dim=self.dim, depth=self.depth, num_heads=self.num_heads,
                       mlp_ratio=self.mlp_ratio, norm_eps=self.norm_eps)
        check_choice("TextClassifierConfig", "pos_embed", self.pos_embed, POS_EMBEDS)
        check_choice("TextClassifierConfig", "pooling", self.pooling, ("first", "mean", "max"))
        check_choice("TextClassifierConfig", "activation", self.activation, ACTIVATIONS)
        if self.dim % self.num_heads:
            raise ConfigError(f"TextClassifierConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.pos_embed == "rope" and (self.dim // self.num_heads) % 2:
            raise ConfigError(f"TextClassifierConfig: rope needs an even head dim, got {self.dim // self.num_heads}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"TextClassifierConfig.pad_id={self.pad_id} is outside the vocabulary ({self.vocab_size})")
        if self.conv_kernel < 0 or (self.conv_kernel and self.conv_kernel % 2 == 0):
            raise ConfigError(f"TextClassifierConfig.conv_kernel must be 0 or an odd size, got {self.conv_kernel}")
        if any(k < 1 for k in self.conv_widths) or self.conv_channels < 1:
            raise ConfigError(f"TextClassifierConfig: conv_widths must be >= 1 and conv_channels >= 1, got "
                              f"{self.conv_widths} / {self.conv_channels}")
        if not 0 <= self.unk_id < self.vocab_size:
            raise ConfigError(f"TextClassifierConfig.unk_id={self.unk_id} is outside the vocabulary ({self.vocab_size})")
        if self.type_vocab_size < 0:
            raise ConfigError(f"TextClassifierConfig.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        for name in ("dropout", "attn_dropout", "mlp_dropout", "embed_dropout", "word_dropout", "head_dropout"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"TextClassifierConfig.{name} must be in [0, 1), got {getattr(self, name)}")


def init_text_weights(module: nn.Module) -> None:
    """Normal(0, 0.02) linears and embeddings, zero biases (BERT / GPT-2 initialisation)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


class TextEncoder(nn.Module):
    """Embeddings + encoder blocks. Shape: tokens (B, N) int64 -> (B, N, C), padding mask (B, N)."""

    def __init__(self, c: TextClassifierConfig):
        super().__init__()
        self.config = c
        self.token_embed = nn.Embedding(c.vocab_size, c.dim)
        self.type_embed = nn.Embedding(c.type_vocab_size, c.dim) if c.type_vocab_size else None
        if c.pos_embed == "learned":
            self.pos_embed: nn.Module | None = LearnedPositionalEmbedding(c.max_length, c.dim)
        elif c.pos_embed == "sincos":
            self.pos_embed = SinusoidalPositionalEmbedding(c.max_length, c.dim)
        else:
            self.pos_embed = None
        self.embed_norm = nn.LayerNorm(c.dim, eps=c.norm_eps) if c.embed_norm else None
        self.embed_dropout = Dropout(c.embed_dropout)
        # Small text data sets: local n-gram features before attention help, as a convolutional
        # tokenizer does in Compact Transformers (Hassani et al. 2021) and CNNs in Kim 2014.
        self.conv = nn.Conv1d(c.dim, c.dim, c.conv_kernel, padding=c.conv_kernel // 2) if c.conv_kernel else None
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout, attn_dropout=c.attn_dropout,
                             mlp_dropout=c.mlp_dropout, norm_first=c.norm_first, activation=c.activation, positional=IN_ATTENTION.get(c.pos_embed),
                             norm_eps=c.norm_eps)
            for _ in range(c.depth)
        )
        # Pre-norm stacks end with a LayerNorm; post-norm blocks already end normalised.
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps) if c.norm_first else nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed (the token embedding; a learned position table declares its own; timm's convention)."""
        return {"token_embed.weight"}

    def forward(self, tokens: Tensor, token_types: Tensor | None = None, *,
                embeddings: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``embeddings`` (B, N, C): used in place of ``token_embed(tokens)`` (the ids still give
        the padding mask), so explain/ can attribute to and perturb the embedded tokens."""
        c = self.config
        if tokens.dim() != 2:
            raise ValueError(f"TextEncoder expects token ids (B, N), got shape {tuple(tokens.shape)}")
        pad = tokens != c.pad_id  # (B, N) True = real token
        if self.training and c.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < c.word_dropout) & pad  # (B, N)
            drop[:, 0] = False  # the <bos> / [CLS]
            tokens = tokens.masked_fill(drop, c.unk_id)
        x = self.token_embed(tokens) if embeddings is None else embeddings  # (B, N, C)
        if c.embed_scale:
            x = x * math.sqrt(c.dim)
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        if self.type_embed is not None:
            types = torch.zeros_like(tokens) if token_types is None else token_types
            x = x + self.type_embed(types)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.embed_dropout(x)
        if self.conv is not None:
            # Zeroed padding = the zero padding the convolution sees at a sequence's end anyway,
            # so the output does not depend on how much padding follows.
            x = x * pad[..., None].to(x.dtype)
            x = x + torch.nn.functional.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (B, N, C)
        return run_blocks(self.blocks, x, pad, self.norm), pad  # padding-free when it pays (layers/packing.py)


class TextClassifier(nn.Module):
    """Shape: tokens (B, N) int64 -> logits (B, num_classes)."""

    def __init__(self, config: TextClassifierConfig):
        super().__init__()
        self.config = config
        # explain/: with first-token pooling the <bos> token is a class token.
        self.num_prefix_tokens = 1 if config.pooling == "first" else 0
        self.encoder = TextEncoder(config)
        self.pooler = Linear(config.dim, config.dim) if config.pooler else None
        # Full convolutions (padding k - 1): a sentence shorter than k still fills one window.
        self.ngram_convs = nn.ModuleList(nn.Conv1d(config.dim, config.conv_channels, k, padding=k - 1)
                                         for k in config.conv_widths)
        head_dropout = config.dropout if config.head_dropout is None else config.head_dropout
        self.dropout = Dropout(head_dropout)
        self.head = Linear(config.dim + len(config.conv_widths) * config.conv_channels, config.num_classes)
        self.apply(init_text_weights)

    @property
    def num_layers(self) -> int:
        """Encoder blocks, for layer-wise lr decay and ``--train.freeze blocks.I-J`` (`attnlab.training.param_groups`)."""
        return self.config.depth

    def layer_id(self, name: str) -> int:
        """0: the embeddings (and their convolution); ``i + 1``: block ``i``; ``depth + 1``: what
        follows the blocks (final norm, pooler, n-gram filters, head)."""
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith("encoder.") and not name.startswith("encoder.norm."):
            return 0
        return self.config.depth + 1

    def _ngram_features(self, x: Tensor, pad: Tensor) -> Tensor:
        """Max over time of each n-gram filter, over windows holding a real token. (B, N, C) -> (B, K * F)."""
        x = (x * pad[..., None].to(x.dtype)).transpose(1, 2)  # (B, C, N), padding zeroed
        mask = pad[:, None].to(x.dtype)  # (B, 1, N)
        features = []
        for conv in self.ngram_convs:
            k = conv.kernel_size[0]
            h = torch.relu(conv(x))  # (B, F, N + k - 1); window t covers tokens t-k+1 .. t
            real = nn.functional.conv1d(mask, mask.new_ones(1, 1, k), padding=k - 1) > 0  # (B, 1, N + k - 1)
            features.append(h.masked_fill(~real, 0.0).amax(-1))  # (B, F); ReLU >= 0, so 0 is neutral
        return torch.cat(features, -1)  # (B, K * F)

    def forward(self, tokens: Tensor, token_types: Tensor | None = None, *, embeddings: Tensor | None = None) -> Tensor:
        x, pad = self.encoder(tokens, token_types, embeddings=embeddings)  # (B, N, C), (B, N)
        if self.config.pooling == "first":
            pooled = x[:, 0]  # (B, C)
        elif self.config.pooling == "max":
            pooled = x.masked_fill(~pad[..., None], float("-inf")).amax(1)  # (B, C)
        else:
            weights = pad.to(x.dtype)[..., None]  # (B, N, 1)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # (B, C)
        if self.pooler is not None:
            pooled = torch.tanh(self.pooler(pooled))
        if len(self.ngram_convs):
            pooled = torch.cat([pooled, self._ngram_features(x, pad)], -1)  # (B, C + K * F)
        return self.head(self.dropout(pooled))


@register_model(
    "text-transformer", config=TextClassifierConfig, example_inputs=_tokens_example,
    description="text classifier: token + position embedding, Transformer encoder, pooled head",
)
def text_transformer(config: TextClassifierConfig) -> TextClassifier:
    return TextClassifier(config)
