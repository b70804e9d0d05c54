"""Several commands in one shell script, their outputs told apart by a random boundary.

Pure functions: ``batch_script`` builds the script, ``parse_batch`` splits its output.
Each command's stdout and stderr are framed on their own stream::

    <boundary> begin <name>\\n<output of the command>\\n<boundary> end <name> <exit code>\\n

The boundary is 128 random bits, so no command output can fake a frame by accident.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


def batch_script(commands: Mapping[str, str]) -> tuple[str, str]:
    """The script running every command in a subshell (stdin /dev/null), and its boundary."""
    boundary = f"obr-{secrets.token_hex(16)}"
    parts = []
    for name, line in commands.items():
        if not NAME.match(name):
            raise ValueError(f"batch command name {name!r} must match {NAME.pattern}")
        parts.append(
            f"printf '%s begin %s\\n' {boundary} {name}; printf '%s begin %s\\n' {boundary} {name} >&2\n"
            f"(\n{line}\n) </dev/null\n"
            f"rc=$?; printf '\\n%s end %s %d\\n' {boundary} {name} $rc; printf '\\n%s end %s\\n' {boundary} {name} >&2\n"
        )
    return "".join(parts) or ":", boundary


def parse_batch(
    stdout: bytes, stderr: bytes, boundary: str, names: list[str]
) -> dict[str, tuple[int, bytes, bytes]] | None:
    """Each command's (exit code, stdout, stderr) by name; ``None`` if the script broke off."""
    results: dict[str, tuple[int, bytes, bytes]] = {}
    for name in names:
        out, rc = _section(stdout, boundary, name, with_code=True)
        err, _ = _section(stderr, boundary, name, with_code=False)
        if out is None or err is None or rc is None:
            return None
        results[name] = (rc, out, err)
    return results


def _section(stream: bytes, boundary: str, name: str, *, with_code: bool) -> tuple[bytes | None, int | None]:
    begin = f"{boundary} begin {name}\n".encode()
    end = f"\n{boundary} end {name}".encode()
    start = stream.find(begin)
    if start < 0:
        return None, None
    start += len(begin)
    stop = stream.find(end, start)
    if stop < 0:
        return None, None
    newline = stream.find(b"\n", stop + len(end))
    tail = stream[stop + len(end) : newline if newline >= 0 else len(stream)]
    if not with_code:
        return stream[start:stop], 0
    try:
        return stream[start:stop], int(tail.strip())
    except ValueError:
        return None, None
