"""Deploy rendered manifests into a real nginx and send it requests (traffic tests)."""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.render.renderer import RenderedAccessNode, render
from reconciler.resolve import StaticResolver
from tests.render.desired import state_of
from tests.services.nginx import Nginx, include_http, include_stream


def deploy(nginx: Nginx, docs: list[dict[str, Any]], reload: bool = False) -> RenderedAccessNode:
    """Render ``docs`` (one access node), install and test them, then start (or reload) nginx."""
    node = next(iter(render(state_of(docs), resolver=StaticResolver({})).values()))
    config_dir = nginx.install(node.files)
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()
    if reload:
        nginx.reload()
    else:
        nginx.start()
    return node


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    headers: Mapping[str, str]


def get(port: int, host: str, path: str = "/", headers: Mapping[str, str] | None = None, source: str = "") -> Answer:
    """GET ``path`` from nginx on 127.0.0.1:``port`` with Host ``host`` (from ``source`` when given)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
    )
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return Answer(response.status, response.read().decode(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()
