"""Invoke, imported only when paramiko uses it.

``paramiko.config`` imports Invoke when paramiko is imported, only to run the ``Match exec``
lines of ``~/.ssh/config``; Invoke in turn imports asyncio, ssl, unittest.mock and its own
YAML: 50-80 ms of every CLI start that reaches an access node. ``defer_invoke_import`` puts a
stand-in module under Invoke's name before paramiko is imported: paramiko sees Invoke
installed as before, and the first attribute it reads from it (``invoke.run``, when a
``Match exec`` is evaluated) imports the real Invoke, which then replaces the stand-in.

(importlib.util.LazyLoader cannot do this: an ``import invoke`` statement reads the lazy
module's ``__spec__``, which loads it at once.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """Stands in for a module not yet imported; reading a missing attribute imports it."""

    def __getattr__(self, attribute: str) -> Any:  # only for attributes the stand-in lacks
        with _lock:
            real = self.__dict__.get("_real")
            if real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                real = importlib.import_module(self.__name__)
                self.__dict__["_real"] = real
        return getattr(real, attribute)


def defer_invoke_import() -> None:
    """Put the stand-in for Invoke, unless Invoke or paramiko is already imported (then it is moot)."""
    if "invoke" in sys.modules or "paramiko" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("invoke")
    except (ImportError, ValueError):
        return
    if spec is None:
        return  # not installed: paramiko copes (``Match exec`` then says Invoke is missing)
    stand_in = _Deferred("invoke")
    stand_in.__spec__ = spec
    sys.modules["invoke"] = stand_in
