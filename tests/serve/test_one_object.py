"""The blast radius of one object (issue 14): the API, the manifests and the renderer agree on types.

Seen on real nginx: the API took ``weight: 2.0`` (stored as a float), the renderer then
refused the upstream, and the access node stopped converging for every other upstream on it
and for health changes: a backend of another upstream killed afterwards was still not
rendered down after 6 s. One rule now (docs/manifest.md): a number with an integral value is
that integer, wherever it is written; any other fraction is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.serve.conftest import (
    FALL,
    INTERVAL,
    Backend,
    Serve,
    apply,
    role,
    serving,
    wait_for,
    web_upstream,
    write_manifests,
)
from tests.services.fleet import Fleet


def test_a_float_weight_on_one_upstream_never_stops_health_changes_of_another(
    fleet: Fleet,
    backends: list[Backend],
    serve: Callable[..., Serve],
    tmp_path: Path,
) -> None:
    web, other = backends[:2], backends[2:]
    upstreams = {"web": web_upstream(web), "other": web_upstream(other)}
    apply(fleet, write_manifests(fleet, tmp_path / "m", upstreams))
    controller = serve()
    controller.wait_converged()

    body = {**upstreams["other"], "owner": "ops", "listen": {"server_names": ["other.example.com"]}}
    body["nodes"] = [{"hostname": other[0].hostname, "weight": 2.0, "max_fails": 3.0}, {"hostname": other[1].hostname}]
    code, answer = controller.put("/upstream/other", body)
    assert code == 200, answer
    code, raw = controller.get("/upstream/other", {"X-Auth-Token": controller.token()})
    assert code == 200, raw
    first = json.loads(raw)["nodes"][0]
    assert (first["weight"], first["max_fails"]) == (2, 3)
    assert type(first["weight"]) is int and type(first["max_fails"]) is int  # stored as the integers

    fraction = {**body, "nodes": [{"hostname": other[0].hostname, "weight": 2.5}]}
    code, answer = controller.put("/upstream/other", fraction)
    assert code == 400, answer
    assert answer["detail"][0]["field"] == "nodes[0].weight", answer
    assert answer["detail"][0]["message"].startswith("expected integer, got a number"), answer

    wait_for(
        lambda: all("weight=2 max_fails=3" in n.live_files().get("http/other.conf", "") for n in fleet.nodes),
        10,
        lambda: f"weight 2 rendered\n{controller.tail()}",
    )
    killed = time.monotonic()
    web[0].stop()
    wait_for(
        lambda: all(role(n, "web", web[0].hostname) == "down" for n in fleet.nodes),
        10,
        lambda: f"{web[0].hostname} rendered down\n{controller.tail()}",
    )
    wait_for(lambda: serving(fleet), 5, "nginx serving it")
    assert time.monotonic() - killed <= FALL * INTERVAL + 2
