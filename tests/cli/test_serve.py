"""serve's command line: --listen forms, and the API mounted with the controller as its view."""

from __future__ import annotations

import click
import pytest

from reconciler.cli.serve import parse_listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8700", ("127.0.0.1", 8700)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:8700", ("::1", 8700)),
        ("[fe80::1]:65535", ("fe80::1", 65535)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["localhost:8700", "127.0.0.1", "::1:8700", "[::1]", "127.0.0.1:0", "1.2.3.4:70000", ""]
)
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_listen(text)


def test_serve_mounts_the_api_and_answers_status_and_metrics(tmp_path: object) -> None:
    import asyncio
    from pathlib import Path

    from aiohttp.test_utils import TestClient, TestServer

    from reconciler.cli.serve import build_app
    from reconciler.serve.controller import Controller, ServeSettings
    from reconciler.store import open_store

    async def scenario() -> tuple[int, int, str]:
        with open_store(f"sqlite:///{Path(str(tmp_path)) / 'state.db'}") as store:
            controller = Controller(store, ServeSettings("ctl-test:1"))
            app = build_app(store, controller, metrics_token="s3cret")
            async with TestClient(TestServer(app)) as client:
                denied = (await client.get("/metrics")).status
                allowed = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
                return denied, allowed.status, await allowed.text()

    denied, allowed, text = asyncio.run(scenario())
    assert denied == 401 and allowed == 200
    assert "obreconcile_master 0.0" in text


@pytest.mark.parametrize(("argv", "expected"), [([], 10.0), (["--verify-timeout", "90"], 90.0)])
def test_serve_passes_verify_timeout_to_its_pushes(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: float
) -> None:
    """A large configuration takes nginx longer than 10 s to load on a busy node: serve, like
    apply, takes --verify-timeout (its pushes rolled back every such reload before)."""
    import importlib
    from pathlib import Path
    from typing import Any

    from click.testing import CliRunner

    from reconciler.cli.main import cli

    started: list[Any] = []

    async def not_serving(controller: Any, *args: Any) -> None:
        started.append(controller)

    monkeypatch.setattr(importlib.import_module("reconciler.cli.serve"), "_serve", not_serving)
    store = f"sqlite:///{Path(str(tmp_path)) / 'state.db'}"
    result = CliRunner().invoke(cli, ["--store", store, "serve", "--listen", "127.0.0.1:18700", *argv])
    assert result.exit_code == 0, result.output
    assert [c.settings.apply.verify_timeout for c in started] == [expected]
