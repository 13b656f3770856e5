"""``attnlab explain RUN_DIR INPUT -o out.png|out.html``: one input's attention."""

from __future__ import annotations

from pathlib import Path

import torch

from attnlab.errors import AttnlabError

__all__ = ["explain_run"]


def explain_run(run_dir: str | Path, input_path: str, output: str | Path, *, layer: int = -1, head: int | None = None,
                rollout: bool = False) -> Path:
    from attnlab.data.base import ImageSpec
    from attnlab.data.vision import prepare_image
    from attnlab.explain import plots
    from attnlab.explain.examples import image_example
    from attnlab.explain.report import write_report
    from attnlab.explain.rollout import cls_to_patches, rollout as attention_rollout
    from attnlab.run import load_run

    output = Path(output)
    if output.suffix.lower() not in (".png", ".html"):
        raise AttnlabError(f"output must end in .png or .html, got {output}")
    _, model, record = load_run(run_dir)
    spec = ImageSpec.from_dict(record["spec"])
    x = prepare_image(input_path, spec)
    example = image_example(model, x, class_names=record["class_names"], spec=spec, title=Path(input_path).name)
    if output.suffix.lower() == ".html":
        write_report(output, [example], title=f"attnlab explain — {Path(input_path).name}", meta={"run": str(run_dir)})
        return output
    maps = [torch.from_numpy(m) for m in example.maps]
    if not maps:
        raise AttnlabError("this model has no attention layers to explain")
    if not -len(maps) <= layer < len(maps):
        raise AttnlabError(f"--layer {layer} is out of range: the model has {len(maps)} attention layers")
    if head is not None and not 0 <= head < maps[0].shape[0]:
        raise AttnlabError(f"--head {head} is out of range: the model has {maps[0].shape[0]} heads")
    grid, prefix = example.grid, example.num_prefix_tokens
    if rollout:
        rolled = attention_rollout([m[None] for m in maps])[0]  # (N, N)
    else:
        chosen = maps[layer]  # (H, N, N)
        rolled = chosen.mean(0) if head is None else chosen[head]
    if grid is None:
        plots.head_grid(maps[layer].numpy(), tokens=example.tokens, path=output)
        return output
    if prefix:
        heat = cls_to_patches(rolled[None], prefix, grid)[0]
    else:  # no class token: how much attention each patch receives, averaged over queries
        heat = rolled.mean(0).reshape(grid)
        heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-12)
    title = f"{example.prediction} — {'rollout' if rollout else f'layer {layer}' + ('' if head is None else f' head {head}')}"
    plots.image_overlay(example.input, heat.numpy(), output, title=title)
    return output
