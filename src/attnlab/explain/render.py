"""One input's attention as a file: ``render_explanation(example, "out.png" | "out.html")``.

The run's task family turns an input into a ``ReportExample`` (``attnlab.run.explain_run``
asks it); HTML output is the full explorer, PNG a figure fitting the input: an overlay for
images, a highlighted time axis for series, highlighted tokens for sequences.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnlab.errors import AttnlabError
from attnlab.output_paths import check_output_file

__all__ = ["render_explanation", "relevance", "check_output"]


def _check_layer_head(maps: list, layer: int, head: int | None) -> None:
    """``--layer`` / ``--head`` name a layer and head of ``maps`` (each (H, N, M)), else one line."""
    if not -len(maps) <= layer < len(maps):
        raise AttnlabError(f"--layer {layer} is out of range: the model has {len(maps)} attention layers")
    if head is not None and not 0 <= head < maps[layer].shape[0]:
        raise AttnlabError(f"--head {head} is out of range: the model has {maps[layer].shape[0]} heads")


def relevance(maps: list[torch.Tensor], *, layer: int, head: int | None, rollout: bool, prefix: int) -> torch.Tensor:
    """Per-token relevance from one layer/head (or the rollout through all layers), scaled to [0, 1].

    With a class token: what flows into it; without: the mean over query rows.
    Shape: maps, each (H, N, N) -> (N - prefix,).
    """
    from attnlab.explain.rollout import cls_to_patches, rollout as attention_rollout

    _check_layer_head(maps, layer, head)
    if rollout:
        rolled = attention_rollout([m[None] for m in maps], num_prefix_tokens=max(prefix, 1))[0]  # (N, N)
    else:
        chosen = maps[layer]  # (H, N, N)
        rolled = chosen.mean(0) if head is None else chosen[head]
    n = rolled.shape[-1]
    return cls_to_patches(rolled, prefix, (1, n - prefix)).reshape(-1)


def check_output(output: str | Path) -> Path:
    """The output path, if it ends in .png or .html and can be written (not a folder, not under a file)."""
    output = Path(output)
    if output.suffix.lower() not in (".png", ".html"):
        raise AttnlabError(f"output must end in .png or .html, got {output}")
    check_output_file(output, ".png or .html file")  # before the model runs (it was a traceback from the writer)
    return output


def _cross_attention_png(example, maps: list[torch.Tensor], output: Path, *, layer: int, head: int | None,
                         rollout: bool) -> None:
    """The chosen layer's (and head's) cross-attention, target rows x source columns, each labelled.
    Shape: maps, each (H, N, M)."""
    from attnlab.explain import plots

    _check_layer_head(maps, layer, head)
    if rollout:  # rollout multiplies square self-attention maps; these map targets onto sources
        raise AttnlabError("--rollout does not apply to cross-attention (target x source) maps: choose --layer / --head")
    chosen = maps[layer] if head is None else maps[layer][head : head + 1]  # (H, N, M)
    what = f"layer {layer}" + ("" if head is None else f" head {head}")
    said = str(example.prediction)
    said = said if len(said) <= 40 else said[:40] + "..."  # a whole translation runs off a narrow figure
    plots.head_grid(chosen.numpy(), tokens=example.tokens, key_tokens=example.key_tokens, path=output,
                    title=f"{said} — {what}", first_head=head or 0)


def render_explanation(example, output: str | Path, *, layer: int = -1, head: int | None = None, rollout: bool = False,
                       method: str | None = None, title: str = "attnlab explain", meta: dict | None = None) -> Path:
    """Write one ``ReportExample`` as the HTML explorer or a PNG figure (see the module docstring).

    ``method``: a key of ``example.methods`` (a relevance map, ``attnlab.explain.relevance``),
    drawn instead of the attention of ``layer`` / ``head``; in HTML the map shown first."""
    from attnlab.explain import plots
    from attnlab.explain.report import write_report

    output = check_output(output)
    if not example.maps and (layer != -1 or head is not None or rollout):  # nothing they could choose
        raise AttnlabError(f"this model has no attention layers: --layer, --head and --rollout do not apply (its map: "
                           f"{', '.join(example.methods or {}) or 'none'})")
    draw = getattr(example, "draw_png", None)
    if output.suffix.lower() == ".png" and callable(draw):
        # an example that draws its own figure (detection: boxes + each query's cross-attention)
        import inspect

        takes = inspect.signature(draw).parameters
        extra = {k: v for k, v in (("rollout", rollout), ("method", method)) if k in takes}
        draw(output, layer=layer, head=head, **extra)
        return output
    if output.suffix.lower() == ".html":
        if example.maps:  # the page would open on a layer or head that is not there
            _check_layer_head(list(example.maps), layer, head)
        write_report(output, [example], title=title, meta=meta or {}, default_method=method, default_layer=layer,
                     default_head=head)
        return output
    maps = [torch.as_tensor(m) for m in example.maps]
    if not maps:  # no attention: the example's own relevance map, if it has one
        if not example.methods:
            raise AttnlabError("this model has no attention layers to explain")
        method = method if method is not None else next(iter(example.methods))
    elif maps[0].shape[-1] != maps[0].shape[-2]:  # cross-attention: the raw head grid of the chosen layer
        _cross_attention_png(example, maps, output, layer=layer, head=head, rollout=rollout)
        return output
    prefix = example.num_prefix_tokens
    if method is not None:
        if method not in (example.methods or {}):
            raise AttnlabError(f"no {method!r} map for this input")
        scores = torch.as_tensor(example.methods[method]).float().clamp_min(0)  # negative: evidence against
        scores = scores / scores.max().clamp_min(1e-12)
        what = method
    else:
        scores = relevance(maps, layer=layer, head=head, rollout=rollout, prefix=prefix)
        what = "rollout" if rollout else f"layer {layer}" + ("" if head is None else f" head {head}")
    title = f"{example.prediction} — {what}"
    if example.kind == "image" and example.grid is not None:
        plots.image_overlay(example.input, scores.reshape(example.grid).numpy(), output, title=title)
    elif example.kind == "series":
        plots.time_series_plot(example.input, scores.numpy(), output, title=title)
    else:
        tokens = list(example.tokens or [])[prefix:] or [str(i) for i in range(scores.numel())]
        plots.token_highlight(tokens, scores.numpy(), output, title=title)
    return output
