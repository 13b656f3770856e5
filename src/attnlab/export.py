"""Export a trained run to ONNX (``attnlab export RUN_DIR --onnx model.onnx``).

Uses PyTorch's own exporter (``torch.onnx.export(dynamo=True)``, which needs the optional
``onnx`` and ``onnxscript`` packages) with a dynamic batch dimension, and a dynamic length
for token-id inputs; the example input comes from the model's registry entry.

The graph is the model alone (raw outputs, inputs as the model takes them after the run's
preprocessing), so what a consumer needs to reproduce ``attnlab predict`` travels inside the
file as ONNX ``metadata_props`` (as Hugging Face optimum and timm exports carry their config):
the run's data.json (class names, target kind, multi-label threshold, regression scaler, image
normalisation, series scaling, tokenizer), the model config, and the inputs' and output's names,
shapes and meaning. The file is written whole (weights inline, below the 2 GB protobuf limit)
to a temporary name beside it and renamed into place: a failed export leaves no half file and
keeps an earlier one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
from pathlib import Path

import torch

from attnlab.errors import AttnlabError
from attnlab.output_paths import check_output_file
from attnlab.training.checkpoint import atomic_write_bytes

__all__ = ["export_onnx"]

log = logging.getLogger(__name__)


def export_onnx(run_dir: str | Path, output: str | Path) -> Path:
    from attnlab.models.registry import model_entry
    from attnlab.run import load_run

    try:
        import onnx
        __import__("onnxscript")  # the exporter needs it; fail here, in one line
    except ImportError:
        raise AttnlabError("ONNX export needs the optional packages: pip install 'attnlab[onnx]'") from None
    output = Path(output)
    if output.suffix != ".onnx":
        raise AttnlabError(f"output must end in .onnx, got {output}")
    check_output_file(output, ".onnx file")  # before the (slow) export runs
    config, model, record = load_run(run_dir)
    entry = model_entry(config.model)
    if entry.example_inputs is None:
        raise AttnlabError(f"model {config.model!r} registers no example inputs to export with")
    inputs = entry.example_inputs(model.config)
    module = (entry.export_module(model) if entry.export_module is not None else model).eval()  # a wrapper too: eval mode
    dynamic = _dynamic_shapes(inputs, _positions(model.config))
    chatter = io.StringIO()  # the exporter prints progress lines and logs its guards; keep the CLI to one line
    with tempfile.TemporaryDirectory(prefix="attnlab-onnx-") as tmp:
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), _quiet("torch"):
                torch.onnx.export(module, inputs, str(Path(tmp) / "model.onnx"), dynamo=True, dynamic_shapes=dynamic,
                                  output_names=["output"])
            proto = onnx.load(str(Path(tmp) / "model.onnx"))  # external data (the weights) read back inline
        except Exception as exc:  # the exporter raises many types; report one line
            log.debug(chatter.getvalue())
            cause = _root_cause(exc)  # "Failed to export ... step 1/3. Next steps:" names nothing; its cause does
            raise AttnlabError(f"ONNX export of {config.model!r} failed: {type(cause).__name__}: {_one_line(cause)}") from None
    _embed_metadata(proto, config, model, record)
    _write_atomically(proto, output)
    return output


def _embed_metadata(proto, config, model, record: dict) -> None:
    """What ``attnlab predict`` does around the model, as ``metadata_props`` (JSON values); see the module docstring."""
    from attnlab.config import to_dict

    graph = proto.graph
    inputs = [{"name": i.name, "dtype": _onnx_dtype(i), "shape": _onnx_shape(i)} for i in graph.input]
    bound = _positions(model.config)
    for entry in inputs:  # onnxruntime does not check a dynamic length's bound: write it down
        lengths = {d: bound for d in entry["shape"] if isinstance(d, str) and d.startswith("tokens")}
        if bound and lengths:
            entry["max"] = lengths
    outputs = [{"name": o.name, "dtype": _onnx_dtype(o), "shape": _onnx_shape(o)} for o in graph.output]
    props = {
        "attnlab.task": config.task,
        "attnlab.model": config.model,
        "attnlab.target": record.get("target") or "class",
        "attnlab.class_names": json.dumps(list(record.get("class_names") or [])),
        "attnlab.inputs": json.dumps(inputs),
        "attnlab.outputs": json.dumps(outputs),
        "attnlab.model_config": json.dumps(to_dict(model.config)),
        "attnlab.data": json.dumps(record),
        "attnlab.usage": _USAGE,
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"attnlab {config.model} for task {config.task}. {_USAGE}"


_USAGE = ("Inputs are what the model takes after attnlab's preprocessing, which is outside the graph: images resized and "
          "normalised with attnlab.data spec (mean, std), series scaled as attnlab.data info says, text as token ids of the "
          "run's tokenizer (attnlab.data info; padding id 0, right-padded; SASRec histories left-padded). The output is raw: "
          "class logits (softmax for scores), per-label logits (sigmoid; labels at or above attnlab.data "
          "calibration.threshold, else 0.5), a regression run's standardised value (x info.target_scaler std + mean), a "
          "forecaster's scaled forecast (x info.std + info.mean per channel); SASRec every item's score as the next "
          "(column 0 padding, column i the i-th id of info.item_ids, space-separated). See docs/interop.md, ONNX.")


def _onnx_dtype(value) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name


def _onnx_shape(value) -> list:
    """Each dimension as its size, or the name of a dynamic one ("batch", "tokens")."""
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _write_atomically(proto, output: Path) -> None:
    """``proto`` to ``output`` through a temporary file beside it, renamed into place; any failure
    (a full disk, a model past protobuf's 2 GB) is one line and leaves neither a half file nor the temporary."""
    try:
        data = proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages of 2 GB and more
        raise AttnlabError(f"{output}: the model is too large for one ONNX file ({_one_line(exc)})") from None
    try:  # only a finished export creates folders; on any failure the temporary goes, an earlier file stays
        atomic_write_bytes(output, data)
    except OSError as exc:
        raise AttnlabError(f"{output}: cannot write it ({exc.strerror or exc})") from None


def _positions(config) -> int | None:
    """How many positions a token input may have: ``max_length`` (text, LM, translation) or SASRec's ``max_len``."""
    return getattr(config, "max_length", None) or getattr(config, "max_len", None)


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
    """Silence a package's loggers for a while: their handlers keep the stderr of import time, which
    redirect_stderr does not reach, and torch.export logs a violated shape guard with its traceback
    (30 lines) before raising; the exporter warns about optional packages it skips. The loggers that
    exist are disabled and the package logger's handlers held back (records of loggers made meanwhile
    reach those handlers too)."""
    root = logging.getLogger(name)
    loggers = [root] + [lg for key, lg in list(logging.root.manager.loggerDict.items())
                        if key.startswith(name + ".") and isinstance(lg, logging.Logger)]
    disabled = [(lg, lg.disabled) for lg in loggers]
    handlers = [(h, h.level) for lg in loggers for h in lg.handlers]
    for lg in loggers:
        lg.disabled = True
    for h, _ in handlers:
        h.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, was in disabled:
            lg.disabled = was
        for h, level in handlers:
            h.setLevel(level)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception ``exc`` was raised from (the exporter wraps torch.export's error)."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def _one_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the exporter colours its messages
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line[:300]
