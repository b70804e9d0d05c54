"""A cache of manifest files' loaded documents, so that a run reads again only the files that changed.

Composing YAML is most of a load (libyaml calls into Python for every node: 1-2 s of CPU for
10,000 upstreams), and a no-op apply loads every file again. An entry holds one file's
documents as the loader built them (JSON: the builder makes only mappings with text keys,
lists, text, numbers, booleans and null), under a key that is the sha256 of the file's bytes
and of the loader's code (``code_key``: reconciler's version, the loader's source, PyYAML's
version and parser). What is never cached: a file with any problem (loading, schema or
semantics); what always runs: the schemas and every semantic rule, cross-file ones included,
on the cached documents as on fresh ones. A document from the cache composes its YAML nodes
again only if a problem must be located in it, so every message and its file:line:col are the
same with and without the cache.

Where: ``$XDG_CACHE_HOME/obreconcile/manifests`` (``~/.cache/...``), directories 0700, one
entry per manifest file (named by the sha256 of its absolute path, replaced when the file
changes), written atomically. An entry that cannot be read or does not match is a miss; a
cache that cannot be written is no cache. Only the CLI's one-shot commands use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path

import yaml

from reconciler import __version__
from reconciler.manifest import load
from reconciler.manifest.load import CachedDocument

_FORMAT = 1


@cache
def code_key() -> bytes:
    """What the loader's output depends on besides the file: changes when any of it does."""
    digest = hashlib.sha256(f"{_FORMAT}\0{__version__}\0{yaml.__version__}\0{load._Parser.__name__}\0".encode())
    digest.update(Path(load.__file__).read_bytes())  # the loader's own code: builder, limits, resolver
    return digest.digest()


def default_directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "obreconcile" / "manifests"


class ManifestCache:
    """Entries under ``directory``; ``get`` on reading a file, ``keep`` after a fresh load,
    ``commit`` once validation has said which files had problems."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_directory()
        self.fresh: dict[str, tuple[str, list[CachedDocument]]] = {}  # file -> (key, documents)

    def _entry(self, name: str) -> Path:
        return self.directory / (hashlib.sha256(os.path.abspath(name).encode()).hexdigest() + ".json")

    @staticmethod
    def key(raw: bytes) -> str:
        return hashlib.sha256(code_key() + raw).hexdigest()

    def get(self, name: str, raw: bytes) -> list[CachedDocument] | None:
        """The documents (index, (line, column), data) of ``name`` whose bytes are ``raw``, or None."""
        try:
            entry = json.loads(self._entry(name).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != self.key(raw):
            return None
        documents = entry.get("documents")
        if not isinstance(documents, list) or not documents:
            return None
        try:
            return [(int(index), (int(start[0]), int(start[1])), data) for index, start, data in documents]
        except (TypeError, ValueError, IndexError):
            return None

    def keep(self, name: str, raw: bytes, documents: list[CachedDocument]) -> None:
        """A file loaded without problems: cached at ``commit`` unless validation finds one."""
        self.fresh[name] = (self.key(raw), documents)

    def commit(self, problem_files: set[str]) -> None:
        """Write every kept file that has no problem; nothing is raised (no cache is no error)."""
        try:
            self.directory.parent.parent.mkdir(parents=True, exist_ok=True)  # the user's cache directory
            for own in (self.directory.parent, self.directory):  # obreconcile's: the user's only
                own.mkdir(mode=0o700, exist_ok=True)
                os.chmod(own, 0o700)
        except OSError:
            return
        for name, (key, documents) in self.fresh.items():
            if name not in problem_files:
                self._write(self._entry(name), json.dumps({"key": key, "documents": documents}).encode())
        self.fresh.clear()

    def _write(self, target: Path, content: bytes) -> None:
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.replace(temporary, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
