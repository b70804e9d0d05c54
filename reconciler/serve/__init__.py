"""Serve: the long-running controller of ``obreconcile serve`` (``Controller``).

Owns the master election and the management-node registrations (``locks.py``), the health
loop and coalesced convergence (``controller.py``), one push worker per access node with
backoff and fencing (``push.py``) and the ``/status`` document (``status.py``). The REST API
(``reconciler.api``) sees it through ``reconciler.api.view``. docs/serve.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.serve.controller import Controller

__all__ = ["Controller"]

# Imported when first used, so that importing one small module of the package (``reconciler.serve.locks``)
# does not import all of it.
_HOME = {"Controller": "reconciler.serve.controller"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
