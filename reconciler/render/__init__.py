"""Render: the desired model and backend selection → the exact files of every access node.

Owns the templates and their Jinja environment (``templates.py``), the finaliser that refuses
unsafe values in printed text (``finaliser.py``), the renderer (``renderer.py``: ``render`` and
``Renderer``, revisions) and writing a rendering into a local directory (``directory.py``,
``obreconcile render --out``). Pure but for reading templates and resolving names; knows
nothing of access nodes' transports or the store. docs/render.md.
"""

from __future__ import annotations

from reconciler.render.renderer import RenderedAccessNode, Renderer, render

__all__ = ["RenderedAccessNode", "Renderer", "render"]
