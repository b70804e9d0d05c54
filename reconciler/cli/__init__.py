"""CLI: the ``obreconcile`` command line (``main``, the console entry point).

Owns parsing options, calling the core and printing: the click group and the small commands
(``main.py``), shared options and the console (``context.py``), plan/apply (``rollout.py``),
serve/converge (``serve.py``), plans and results as text and JSON (``report.py``) and
``obreconcile status`` (``status.py``). The only layer that prints.
"""

from __future__ import annotations

from reconciler.cli.main import main

__all__ = ["main"]
