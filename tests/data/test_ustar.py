"""`attnlab.data.ustar.members` reads the same members as `tarfile`, whatever wrote the tar."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from attnlab.data.ustar import members


def _tar(entries, fmt) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _reference(blob: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def _entries(rng, long_names: bool):
    out = []
    for i in range(int(rng.integers(5, 25))):
        size = int(rng.choice([0, 1, 511, 512, 513, 1024, int(rng.integers(0, 5000))]))
        name = f"d{i % 3}/{i:05d}.{rng.choice(['png', 'cls', 'txt'])}"
        if long_names and rng.random() < 0.3:
            name = "x" * int(rng.integers(101, 180)) + f"/{i}.png"  # needs a PAX / GNU header (or a ustar prefix)
        out.append((name, rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
        if rng.random() < 0.15:
            out.append((f"folder{i}", None))
    return out


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_members_as_tarfile(fmt, seed):
    rng = np.random.default_rng(seed)
    entries = _entries(rng, long_names=fmt != tarfile.USTAR_FORMAT)
    blob = _tar(entries, fmt)
    got = [(name, fetch(True)) for name, fetch in members(io.BytesIO(blob))]
    assert got == _reference(blob)
    assert [n for n, _ in got] == [n for n, d in entries if d is not None]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_skipped_members_are_not_read_and_the_rest_still_is(fmt):
    rng = np.random.default_rng(7)
    entries = _entries(rng, long_names=fmt == tarfile.PAX_FORMAT)
    blob = _tar(entries, fmt)
    got = []
    for i, (name, fetch) in enumerate(members(io.BytesIO(blob))):
        if i % 3 == 0:
            assert fetch(False) is None
        elif i % 3 == 1:
            got.append((name, fetch(True)))
        # i % 3 == 2: never fetched
    reference = _reference(blob)
    assert got == [reference[i] for i in range(len(reference)) if i % 3 == 1]


def test_ustar_prefix_names():
    name = "a" * 120 + "/file.png"  # fits ustar by splitting into prefix + name
    blob = _tar([(name, b"abc")], tarfile.USTAR_FORMAT)
    assert [(n, f(True)) for n, f in members(io.BytesIO(blob))] == [(name, b"abc")]


def test_truncated_and_corrupt_tars_raise_like_tarfile():
    blob = _tar([("a.png", b"x" * 3000), ("b.png", b"y" * 100)], tarfile.USTAR_FORMAT)
    for cut in (700, 512 + 2000, 3584 + 100):  # inside a's data, inside b's header
        with pytest.raises(tarfile.ReadError):
            [f(True) for _, f in members(io.BytesIO(blob[:cut]))]
    bad = bytearray(blob)
    bad[3584 + 10] ^= 0xFF  # b.png's header: its checksum no longer holds
    # tarfile takes a bad header after the first as the end of the archive; so does members (a
    # shard then holds fewer samples than its index says, which ShardStream reports).
    got = [(n, f(True)) for n, f in members(io.BytesIO(bytes(bad)))]
    assert got == _reference(bytes(bad)) == [("a.png", b"x" * 3000)]
    bad[10] ^= 0xFF  # the first header too: not a tar at all
    with pytest.raises(tarfile.ReadError):
        [f(True) for _, f in members(io.BytesIO(bytes(bad)))]
