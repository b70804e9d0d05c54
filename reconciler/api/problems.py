"""API errors as JSON: ``{"error": "...", "detail": ...}`` with SPEC.md §4's status codes.

Handlers raise ``ApiError``; the middleware in app.py turns it (and anything unexpected, as a
bare 500 without a stack trace) into a response.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from reconciler.errors import Problem


class ApiError(Exception):
    """An answer other than success: HTTP status, a short message, optional structured detail."""

    def __init__(self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        return web.json_response({"error": self.error, "detail": self.detail}, status=self.status, headers=self.headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def forbidden(why: str) -> ApiError:
    return ApiError(403, why)


def problem_detail(problems: list[Problem]) -> list[dict[str, str]]:
    """Problems as the API reports them: object, field and message (no file:line: it is a body)."""
    return [
        {"kind": p.kind, "name": p.name, "field": p.field, "message": p.message, "text": _text(p)} for p in problems
    ]


def _text(p: Problem) -> str:
    parts = [f"{p.kind}/{p.name}"] if p.kind or p.name else []
    if p.field:
        parts.append(p.field)
    parts.append(p.message)
    return ": ".join(parts)
