"""The root of a manifests repository, found the way git finds ``.git``.

Objects remember the file they came from relative to this root, so the same manifests give
the same store contents wherever the checkout lies (a CI workspace, a laptop, a relative or
an absolute path): the store compares an object's file as well as its body.

The root is the nearest directory, from the first path given upwards, holding
``obreconcile.yaml`` (the shared configuration) or ``.git``; when there is neither, the
deepest directory that holds every path given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CONFIG_FILE = "obreconcile.yaml"
MARKERS = (CONFIG_FILE, ".git")


def find_upwards(start: Path, names: Iterable[str]) -> Path | None:
    """The nearest directory from ``start`` (a file: its directory) upwards holding one of
    ``names``; None when no directory up to ``/`` does."""
    wanted = tuple(names)
    here = start if start.is_dir() else start.parent
    for directory in (here, *here.parents):
        if any((directory / name).exists() for name in wanted):
            return directory
    return None


def manifests_root(paths: Iterable[str | os.PathLike[str]]) -> Path:
    """The root of the manifests under ``paths`` (absolute; see the module)."""
    given = [Path(p).absolute() for p in paths]
    if not given:
        return Path.cwd()
    found = find_upwards(given[0], MARKERS)
    if found is not None:
        return found
    directories = [p if p.is_dir() else p.parent for p in given]
    return Path(os.path.commonpath([str(d) for d in directories]))


def relative_to_root(file: str, root: Path) -> str:
    """``file`` relative to ``root`` (POSIX separators); as given when it lies outside ``root``."""
    path = Path(file).absolute()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return file
