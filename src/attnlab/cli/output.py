"""What the command line reads and prints: input arguments expanded to files (folders, ``-`` for
standard input) and one-line renderings of metrics and predictions."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from attnlab.errors import AttnlabError

__all__ = ["as_given", "expand_inputs", "metrics_line", "result_line", "stdin_file"]


def metrics_line(metrics: dict[str, float]) -> str:
    """``accuracy 0.9500, macro_f1 0.9400, loss 0.1234``: one line of test metrics."""
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def result_line(r: dict) -> str:
    """'input: class (score)'; a forecast its CSV table;
    detections add their box, 'input: class [x0, y0, x1, y1] (score)';
    a regression run 'input: value', a multi-label run 'input: a (score), b (score)'."""
    if r.get("csv") is not None:  # a table (forecasting): printed as is, so `> forecast.csv` saves it
        return str(r["csv"]).rstrip("\n")
    if "value" in r:
        return f"{r['input']}: {r['value']:.6g}"
    if "labels" in r:
        chosen = ", ".join(f"{n} ({s:.3f})" for n, s in zip(r["labels"], r["scores"]))
        return f"{r['input']}: " + (chosen or f"no label above {r['threshold']:.3f}")
    if r.get("class") is None:
        return f"{r['input']}: {r.get('note', 'no prediction')}"
    box = r.get("box")
    where = f" [{', '.join(f'{v:g}' for v in box)}]" if box else ""
    name = r["class"]
    if isinstance(name, str) and (not name.isprintable() or name != name.strip()):
        name = repr(name)  # a language model's next token " " or "\n": visible, and one line per result
    return f"{r['input']}: {name}{where} ({r['score']:.3f})"


def expand_inputs(items: list[str], stack: contextlib.ExitStack,
                  suffixes: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """Input arguments -> files: a folder gives its files (sorted, hidden ones skipped; with
    ``suffixes``, only those the task reads, as timm's inference reads a folder's images and
    not its README, saying how many others it left), ``-`` a temporary copy of standard input.
    Returns the files and {temporary path: "-"}."""
    files: list[str] = []
    shown: dict[str, str] = {}
    for item in items:
        if item == "-":
            path = stdin_file(stack)
            shown[path] = "-"
            files.append(path)
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not found:
                raise AttnlabError(f"input folder has no files: {item}")
            read = [f for f in found if not suffixes or Path(f).suffix.lower() in suffixes]
            if not read:
                raise AttnlabError(f"input folder has no files this run reads ({', '.join(suffixes)}): {item}")
            if len(read) < len(found):
                other = next(f for f in found if Path(f).suffix.lower() not in suffixes)
                logging.getLogger(__name__).warning(
                    "%s: left out %d file(s) of other types (e.g. %s); this run reads %s (name a file to read it anyway)",
                    item, len(found) - len(read), os.path.relpath(other, item), ", ".join(suffixes))
            files += read
        elif os.path.exists(item):
            files.append(item)
        else:
            raise AttnlabError(f"input not found: {item}")
    return files, shown


def _named(message: str, shown: dict[str, str]) -> str:
    for path, name in shown.items():
        message = message.replace(path, f"standard input ({name!r})")
    return message


class _AsGiven(logging.Filter):
    """Rewrites a log record's message as `_named` does (a handler filter: records of every logger pass it)."""

    def __init__(self, shown: dict[str, str]):
        super().__init__()
        self.shown = shown

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        named = _named(message, self.shown)
        if named != message:
            record.msg, record.args = named, None
        return True


@contextlib.contextmanager
def as_given(shown: dict[str, str]):
    """An error or a warning names what the user gave ({temporary path: "-"}), not the temporary copy
    of standard input."""
    handlers = logging.getLogger().handlers if shown else []
    rename = _AsGiven(shown)
    for handler in handlers:
        handler.addFilter(rename)
    try:
        yield
    except AttnlabError as exc:
        message = _named(str(exc), shown)
        if message == str(exc):
            raise
        raise type(exc)(message) from None
    finally:
        for handler in handlers:
            handler.removeFilter(rename)


def stdin_file(stack: contextlib.ExitStack) -> str:
    """Standard input saved to a temporary file whose suffix matches its content (PNG, JPEG,
    NumPy, WAV, else text), so every task's reader takes it like a file argument."""
    import tempfile

    data = sys.stdin.buffer.read()
    if not data:
        raise AttnlabError("standard input ('-') is empty")
    magic = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"\x93NUMPY": ".npy", b"RIFF": ".wav", b"BM": ".bmp"}
    suffix = next((ext for head, ext in magic.items() if data.startswith(head)), ".txt")
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="attnlab-stdin-"))
    path = os.path.join(folder, "stdin" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path
