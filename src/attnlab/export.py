"""Export a trained run to ONNX (``attnlab export RUN_DIR --onnx model.onnx``).

Uses PyTorch's own exporter (``torch.onnx.export(dynamo=True)``, which needs the optional
``onnx`` and ``onnxscript`` packages) with a dynamic batch dimension, and a dynamic length
for token-id inputs; the example input comes from the model's registry entry.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path

import torch

from attnlab.errors import AttnlabError
from attnlab.output_paths import check_output_file

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
    check_output_file(output, ".onnx file")  # before the (slow) export runs
    config, model, _ = load_run(run_dir)
    entry = model_entry(config.model)
    if entry.example_inputs is None:
        raise AttnlabError(f"model {config.model!r} registers no example inputs to export with")
    inputs = entry.example_inputs(model.config)
    dynamic = _dynamic_shapes(inputs, getattr(model.config, "max_length", None))
    chatter = io.StringIO()  # the exporter prints progress lines and logs its guards; keep the CLI to one line
    with tempfile.TemporaryDirectory(prefix="attnlab-onnx-") as tmp:
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), _quiet("torch.onnx"):
                torch.onnx.export(model.eval(), inputs, str(Path(tmp) / output.name), dynamo=True, dynamic_shapes=dynamic)
        except Exception as exc:  # the exporter raises many types; report one line
            log.debug(chatter.getvalue())
            raise AttnlabError(f"ONNX export of {config.model!r} failed: {type(exc).__name__}: {_one_line(exc)}") from None
        # only a finished export creates folders: the .onnx and any external-data file beside it
        output.parent.mkdir(parents=True, exist_ok=True)
        for made in Path(tmp).iterdir():
            shutil.move(str(made), str(output.parent / made.name))
    return output


def _dynamic_shapes(inputs: tuple, max_len: int | None) -> tuple:
    """A dynamic batch for every input; each token-id input (B, N) also its own dynamic length,
    up to the model's positions if bounded (a translation model's source and target lengths differ)."""
    batch = torch.export.Dim("batch", min=1)
    shapes, n = [], 0
    for x in inputs:
        if x.dim() == 2 and not x.is_floating_point():
            name = "tokens" if n == 0 else f"tokens_{n}"
            n += 1
            seq = torch.export.Dim(name, min=2, max=max_len) if max_len else torch.export.Dim(name, min=2)
            shapes.append({0: batch, 1: seq})
        else:
            shapes.append({0: batch})
    return tuple(shapes)


@contextlib.contextmanager
def _quiet(name: str):
    """Hold a logger to errors for a while (its handlers keep the stderr of import time, which
    redirect_stderr does not reach): the exporter warns about optional packages it skips."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(exc: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the exporter colours its messages
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:300]
