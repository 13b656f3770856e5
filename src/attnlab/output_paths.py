"""Output paths checked before the slow work that writes them (a run, an ONNX export, an explanation).

A path that could never be written fails only at the end otherwise, as a traceback from the
writer. `check_output_file` refuses it first, in one line: a folder, a path under a file, or a
place nothing can be written (a read-only mount, ``/proc``), found by opening the file for
appending; whatever that made (the file, missing folders) is removed again, so a refused command
leaves nothing behind. `missing_folders` and `removed_after` are the same probe's parts, for a
caller that probes a folder (the run directory).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from attnlab.errors import AttnlabError

__all__ = ["check_output_file", "missing_folders", "removed_after", "remove_outputs"]


def missing_folders(path: Path) -> tuple[list[Path], Path]:
    """(``path`` and the folders above it that do not exist, deepest first; the nearest that does)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing, path


@contextlib.contextmanager
def removed_after(folders: list[Path]) -> Iterator[None]:
    """Remove ``folders`` (deepest first) when the block ends, whatever it made of them."""
    try:
        yield
    finally:
        for made in folders:
            with contextlib.suppress(OSError):
                made.rmdir()


def check_output_file(output: Path, what: str = "file") -> None:
    """Refuse ``output`` unless a ``what`` (e.g. ".onnx file") can be written there; see the module docstring."""
    if output.is_dir():
        raise AttnlabError(f"{output}: is a folder; name the {what} to write")
    missing, parent = missing_folders(output.parent)
    if not parent.is_dir():
        raise AttnlabError(f"{output}: {parent} is a file, not a folder")
    existed = output.exists()
    with removed_after(missing):
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


def remove_outputs(folder: Path, names: tuple[str, ...]) -> None:
    """Remove the files and folders ``names`` of ``folder`` (an earlier run's outputs), and nothing else."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
