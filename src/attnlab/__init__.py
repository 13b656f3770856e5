"""attnlab: attention-based pattern recognition in PyTorch.

Shape alphabet used in every docstring and comment:

    B  batch size            N  query length           M  key/value length
    H  query heads           G  key/value head groups  D  head dimension
    C  model dimension (C = H * D)

Boolean masks follow SDPA: True means "may attend".
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
