"""Where obreconcile keeps things on an access node, beside ``nginx.config_dir``.

    <config_dir>                 a symlink to the live release (nginx includes files through it)
    <config_dir>.releases/<id>/  complete releases: the rendered files + .obreconcile/marker.json
                                 (small: revision, digests, who, when) + .obreconcile/model.json.gz
                                 + .obreconcile/stat (each file's digest and stat, for the facts)
    <config_dir>.lock            flock(1) lock file: one apply at a time on a node

Switching releases is one ``rename(2)`` of a new symlink over ``<config_dir>``, so nginx
(and anyone reading the directory) sees the old set of files or the new one, never a mix.
The three most recent releases are kept for rollback; older ones are removed.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from reconciler.manifest.model import AccessNode

MARKER = ".obreconcile/marker.json"
MODEL = ".obreconcile/model.json.gz"  # the manifests rendered, for plan's object-level view
KEEP_RELEASES = 3
LOCK_BUSY_EXIT = 75  # flock -E: the lock is held by another apply
DEFAULT_ERROR_LOG = "/var/log/nginx/error.log"


@dataclass(frozen=True)
class NodeLayout:
    """The paths of one access node's managed configuration."""

    config_dir: str

    @classmethod
    def of(cls, node: AccessNode) -> NodeLayout:
        return cls(posixpath.normpath(node.nginx.config_dir))

    @property
    def releases(self) -> str:
        return self.config_dir + ".releases"

    @property
    def lock(self) -> str:
        return self.config_dir + ".lock"

    @property
    def marker(self) -> str:
        return posixpath.join(self.config_dir, MARKER)

    @property
    def model(self) -> str:
        return posixpath.join(self.config_dir, MODEL)

    def release(self, release_id: str) -> str:
        return posixpath.join(self.releases, release_id)

    @property
    def parent(self) -> str:
        return posixpath.dirname(self.config_dir)
