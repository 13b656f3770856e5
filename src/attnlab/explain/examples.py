"""Build ``ReportExample``s from a trained model and its data (what ``attnlab train`` reports)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.explain.capture import capture
from attnlab.explain.report import ReportExample

__all__ = ["image_example", "vision_examples", "display_image", "TokenModel", "random_words_example"]


def display_image(x: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Undo input normalisation for display. Shape: (C, H, W) -> (H, W) or (H, W, 3) in [0, 1]."""
    x = x.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    x = x.clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def image_example(
    model: nn.Module, x: Tensor, *, class_names: Sequence[str], spec: Any = None, label: int | None = None, title: str = ""
) -> ReportExample:
    """One image (C, H, W) through a vision model, with its attention maps and prediction."""
    device = next(model.parameters()).device
    model.eval()
    maps = capture(model, x[None].to(device), device="cpu")
    probs = torch.softmax(maps.output.float(), dim=-1)[0].cpu()
    pred = int(probs.argmax())
    grid = tuple(getattr(model, "patch_grid", (0, 0)))
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    tokens = ["CLS"] * prefix + [f"p{r},{c}" for r in range(grid[0]) for c in range(grid[1])]
    mean, std = (spec.mean, spec.std) if spec is not None else (None, None)
    return ReportExample(
        title=title or "example",
        kind="image",
        input=display_image(x, mean, std),
        maps=[m[0].float().numpy() for m in maps.maps],
        layer_names=list(maps.names),
        tokens=tokens,
        prediction=f"{class_names[pred]} ({float(probs[pred]):.2f})",
        label=None if label is None else class_names[label],
        grid=grid if grid[0] else None,
        num_prefix_tokens=prefix,
    )


def vision_examples(model: nn.Module, task_data: Any, count: int) -> list[ReportExample]:
    """The first ``count`` test images of a vision task."""
    examples = []
    for i in range(min(count, len(task_data.test))):
        x, y = task_data.test[i]
        examples.append(
            image_example(model, x, class_names=task_data.class_names, spec=task_data.spec, label=int(y), title=f"test #{i}")
        )
    return examples


class TokenModel(nn.Module):
    """Embedding + a stack of TransformerBlocks over token ids (a demo and test model).

    Shape: ids (B, N) -> (B, N, C).
    """

    def __init__(self, vocab: int = 64, dim: int = 32, heads: int = 4, depth: int = 2):
        super().__init__()
        from attnlab.layers import TransformerBlock

        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio=2.0) for _ in range(depth))

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h)
        return h


def random_words_example(n: int = 1024, vocab: int = 64, *, title: str = "random words", seed: int = 0) -> ReportExample:
    """N random words through an untrained 2-layer, 4-head ``TokenModel`` whose query and key
    projections are sharpened x4 (so heads attend to matching words, as a trained model's would)."""
    torch.manual_seed(seed)
    model = TokenModel(vocab=vocab).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.q_proj.weight.mul_(4.0)
            block.attn.k_proj.weight.mul_(4.0)
    ids = torch.randint(0, vocab, (1, n))
    return ReportExample.from_capture(title, "tokens", [f"w{int(i)}" for i in ids[0]], capture(model, ids))
