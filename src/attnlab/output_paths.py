"""Output files checked before the slow work that writes them (an ONNX export, an explanation).

A path that could never be written fails only at the end otherwise, as a traceback from the
writer. `check_output_file` refuses it first, in one line: a folder, a path under a file, or a
place nothing can be written (a read-only mount, ``/proc``), found by opening the file for
appending; whatever that made (the file, missing folders) is removed again, so a refused command
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from attnlab.errors import AttnlabError

__all__ = ["check_output_file"]


def check_output_file(output: Path, what: str = "file") -> None:
    """Refuse ``output`` unless a ``what`` (e.g. ".onnx file") can be written there; see the module docstring."""
    if output.is_dir():
        raise AttnlabError(f"{output}: is a folder; name the {what} to write")
    missing = []  # folders the path needs that do not exist yet, deepest first
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise AttnlabError(f"{output}: {parent} is a file, not a folder")
    existed = output.exists()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "ab"):
            pass
    except OSError as exc:
        raise AttnlabError(f"{output}: cannot write it ({exc.strerror or exc})") from None
    finally:
        if not existed:
            with contextlib.suppress(OSError):
                output.unlink()
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()
