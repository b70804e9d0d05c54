"""Serve: the long-running controller of ``obreconcile serve`` (``Controller``).

Owns the master election and the management-node registrations (``locks.py``), the health
loop and coalesced convergence (``controller.py``), one push worker per access node with
backoff and fencing (``push.py``) and the ``/status`` document (``status.py``). The REST API
(``reconciler.api``) sees it through ``reconciler.api.view``. docs/serve.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.exports import lazy_exports

if TYPE_CHECKING:
    from reconciler.serve.controller import Controller

__all__ = ["Controller"]

__getattr__ = lazy_exports(__name__, {"Controller": "reconciler.serve.controller"})
