"""Reading the members of a tar shard in order, fast for the plain ustar headers shards hold.

Python's `tarfile` spends about 25 us of CPU per member parsing a header field by field
(``frombuf``: ~13 field conversions, two checksums), more than libspng needs to decode a
small PNG, so DataLoader workers reading shards fell behind training
(``benchmarks/data_scale.py``). A shard written by ``attnlab shard`` (WebDataset's `TarWriter`
with ``format=tarfile.USTAR_FORMAT``) holds only plain ustar headers: a regular file's name,
octal size and checksum are all a reader needs. `members` reads those itself and hands any
other header (PAX or GNU extensions, links, base-256 sizes, a checksum it cannot confirm) and
everything after it to `tarfile`, which starts reading at the file's current position, so every
tar `tarfile` reads is still read, with the same members.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = ["members"]

BLOCK = 512
_REGULAR = (b"0", b"\0")
_DIRECTORY = b"5"
_BLANK_CHECKSUM = 8 * ord(" ")  # the checksum field counts as eight spaces


def members(f: BinaryIO) -> Iterator[tuple[str, Callable[[bool], bytes | None]]]:
    """``(name, fetch)`` for each regular file of the tar open as ``f``, in order. Call
    ``fetch(True)`` for its content or ``fetch(False)`` to seek past it, before asking for the
    next member (not calling it at all also skips). Raises `tarfile.ReadError` on a truncated
    or corrupt tar, as `tarfile` does."""
    while True:
        offset = f.tell()
        header = f.read(BLOCK)
        if not header:
            return  # end of file at a member boundary: tarfile accepts it too
        if len(header) < BLOCK:
            raise tarfile.ReadError("unexpected end of data in a tar header")
        if header.count(0) == BLOCK:
            return  # end-of-archive marker
        plain = _plain(header)
        if plain is None:  # anything else: tarfile reads the rest, from this header on
            f.seek(offset)
            yield from _with_tarfile(f)
            return
        name, size, regular = plain
        data_start = f.tell()
        stop = data_start + size + (-size % BLOCK)
        if regular:
            done = False

            def fetch(read: bool, size: int = size) -> bytes | None:
                nonlocal done
                done = True
                if not read:
                    f.seek(stop)
                    return None
                data = f.read(size)
                if len(data) < size:
                    raise tarfile.ReadError("unexpected end of data in a tar member")
                f.seek(stop)
                return data

            yield name, fetch
            if not done:
                f.seek(stop)
        else:
            f.seek(stop)


def _plain(header: bytes) -> tuple[str, int, bool] | None:
    """(name, size, is a regular file) of a plain ustar header of a file or folder, else None."""
    kind = header[156:157]
    if kind not in _REGULAR and kind != _DIRECTORY:
        return None
    if header[257:262] != b"ustar" or header[124] & 0x80:  # not ustar, or a base-256 size
        return None
    try:
        checksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None
    if checksum != sum(header) - sum(header[148:156]) + _BLANK_CHECKSUM:
        return None  # perhaps a signed checksum: tarfile decides
    name = header[:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0]
    full = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
    return full, size, kind in _REGULAR


def _with_tarfile(f: BinaryIO) -> Iterator[tuple[str, Callable[[bool], bytes | None]]]:
    with tarfile.open(fileobj=f, mode="r:") as tar:
        while (member := tar.next()) is not None:
            if member.isfile():
                yield member.name, lambda read, m=member: tar.extractfile(m).read() if read else None
