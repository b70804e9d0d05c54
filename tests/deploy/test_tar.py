"""The release archive: what tarfile (and GNU tar, on every node) reads back, byte for byte."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

from reconciler.deploy.apply import _tar


def _read(archive: bytes) -> dict[str, tuple[int, int, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        out = {}
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert member.isfile() and extracted is not None
            out[member.name] = (member.mode, member.uid, extracted.read())
        return out


def test_every_member_reads_back_as_written_short_names_and_long(tmp_path: Path) -> None:
    contents = {
        "http/web.conf": b"upstream ob_web {}\n",
        "http/_default.conf": b"",  # empty: no data block
        "stream/pg.conf": b"x" * 512,  # exactly one block: no padding
        ".obreconcile/marker.json": b"{}" * 300,
    }
    archive = _tar("lb1", contents)
    assert _read(archive) == {p: (0o644, 0, d) for p, d in contents.items()}
    long = {"http/" + "a" * 120 + ".conf": b"long\n", **contents}  # past ustar's 100 bytes: PAX
    assert _read(_tar("lb1", long)) == {p: (0o644, 0, d) for p, d in long.items()}
    (tmp_path / "a.tgz").write_bytes(archive)
    unpack = tmp_path / "out"
    unpack.mkdir()
    subprocess.run(["tar", "-xzf", str(tmp_path / "a.tgz"), "-C", str(unpack)], check=True)
    assert {p: (unpack / p).read_bytes() for p in contents} == contents
    assert oct((unpack / "http/web.conf").stat().st_mode & 0o777) == "0o644"
