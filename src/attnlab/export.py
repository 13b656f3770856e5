"""Export a trained run to ONNX (``attnlab export RUN_DIR --onnx model.onnx``).

Uses PyTorch's own exporter (``torch.onnx.export(dynamo=True)``, which needs the optional
``onnx`` and ``onnxscript`` packages) with a dynamic batch dimension, and a dynamic length
for token-id inputs; the example input comes from the model's registry entry.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import torch

from attnlab.errors import AttnlabError

__all__ = ["export_onnx"]

log = logging.getLogger(__name__)


def export_onnx(run_dir: str | Path, output: str | Path) -> Path:
    from attnlab.models.registry import model_entry
    from attnlab.run import load_run

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise AttnlabError("ONNX export needs the optional packages: pip install 'attnlab[onnx]'") from None
    output = Path(output)
    if output.suffix != ".onnx":
        raise AttnlabError(f"output must end in .onnx, got {output}")
    config, model, _ = load_run(run_dir)
    entry = model_entry(config.model)
    if entry.example_inputs is None:
        raise AttnlabError(f"model {config.model!r} registers no example inputs to export with")
    inputs = entry.example_inputs(model.config)
    batch = torch.export.Dim("batch", min=1)
    # Token ids (B, N) also get a dynamic length, up to the model's positions (if bounded).
    max_len = getattr(model.config, "max_length", None)
    seq = torch.export.Dim("tokens", min=2, max=max_len) if max_len else torch.export.Dim("tokens", min=2)
    dynamic = tuple({0: batch, 1: seq} if x.dim() == 2 and not x.is_floating_point() else {0: batch} for x in inputs)
    output.parent.mkdir(parents=True, exist_ok=True)
    chatter = io.StringIO()  # the exporter prints progress lines; keep the CLI quiet
    try:
        with contextlib.redirect_stdout(chatter):
            torch.onnx.export(model.eval(), inputs, str(output), dynamo=True, dynamic_shapes=dynamic)
    except Exception as exc:  # the exporter raises many types; report one line
        log.debug(chatter.getvalue())
        raise AttnlabError(f"ONNX export of {config.model!r} failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    return output
