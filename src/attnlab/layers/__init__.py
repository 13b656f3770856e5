"""nn.Module building blocks: attention, feed-forward, Transformer blocks, positions, CNN attention."""

from attnlab.layers.attention import MultiHeadAttention, key_padding_to_mask
from attnlab.layers.block import TransformerBlock
from attnlab.layers.cache import KVCache
from attnlab.layers.conv_attention import CBAM, ChannelAttention, NonLocalBlock2d, SpatialAttention, SqueezeExcite
from attnlab.layers.dropout import Dropout
from attnlab.layers.feedforward import FeedForward
from attnlab.layers.linear import Linear
from attnlab.layers.linear_attention import LinearAttention
from attnlab.layers.positional import LearnedPositionalEmbedding, RelativePositionBias, SinusoidalPositionalEmbedding

__all__ = [
    "MultiHeadAttention",
    "key_padding_to_mask",
    "TransformerBlock",
    "KVCache",
    "FeedForward",
    "Dropout",
    "Linear",
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEmbedding",
    "RelativePositionBias",
    "NonLocalBlock2d",
    "SqueezeExcite",
    "ChannelAttention",
    "SpatialAttention",
    "CBAM",
    "LinearAttention",
]
