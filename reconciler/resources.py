"""Where the shipped JSON Schemas and nginx templates are.

In a wheel they are copied into ``reconciler/_data/`` (see pyproject.toml); in a source
checkout they are the top-level ``schemas/`` and ``templates/`` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / name


def schema_dir() -> Path:
    return _data_dir("schemas")


def template_dir() -> Path:
    return _data_dir("templates")
