"""Small MNIST-format files for the data tests (`test_mnist.py`, `test_vision.py`'s bad-data cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_npz"]


def write_npz(path: Path, n_train=40, n_test=12, size=28, seed=0, **overrides) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "y_train": rng.permutation(np.arange(n_train) % 10).astype(np.uint8),  # every class: the test's are trained
        "x_test": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path
