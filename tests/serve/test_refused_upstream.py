"""serve with an upstream the renderer refuses (issue 14): health changes of the others still
reach nginx, and the refusal is reported on the upstream (status, /metrics, the owner's view).

Seen on real nginx: one upstream that failed to render failed the whole access node's render,
serve's push failed and retried with backoff, and a backend of another upstream killed
afterwards was never rendered down. The trigger here is what a team can do through the API
beside a template of the operators: a second server name on its upstream, which the
template (printing the names joined by a space) cannot render.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.serve.conftest import (
    FALL,
    INTERVAL,
    Backend,
    Serve,
    role,
    serving,
    wait_for,
    web_upstream,
    write_manifests,
)
from tests.services.fleet import Fleet
from tests.services.templates import joined_names_templates


def _status(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fleet.cli_args("status", *args), capture_output=True, text=True, timeout=60, check=False)


def test_a_refused_upstream_never_stops_health_changes_and_is_reported_on_it(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    web, api = backends[:2], backends[2:]
    upstreams = {"web": web_upstream(web), "api": web_upstream(api)}
    manifests = write_manifests(fleet, tmp_path / "m", upstreams)
    templates = joined_names_templates(tmp_path / "templates")
    applied = fleet.cli("apply", manifests, extra=["--templates", str(templates)])
    assert applied.returncode == 0, applied.stdout + applied.stderr
    kept = {n.name: (n.config_dir / "http" / "api.conf").read_bytes() for n in fleet.nodes}
    controller = serve()
    controller.wait_converged()

    body = {**upstreams["api"], "owner": "ops", "listen": {"server_names": ["api.example.com", "api.example.org"]}}
    code, answer = controller.put("/upstream/api", body)
    assert code == 200, answer
    series = [f'obreconcile_upstream_refused{{access_node="{n.name}",upstream="api"}} 1.0' for n in fleet.nodes]
    wait_for(
        lambda: all(s in controller.metrics() for s in series),
        15,
        lambda: f"api refused on every node in /metrics\n{controller.tail()}",
    )
    wait_for(controller.converged, 10, lambda: f"the nodes converged without api\n{controller.tail()}")
    status = controller.status()
    assert status["refused_upstreams"] == ["api"], status
    assert all(n["refused"] == ["api"] and n["converged"] and n["result"] != "failed" for n in status["nodes"]), status
    code, raw = controller.get("/upstream/api/health", {"X-Auth-Token": controller.token()})
    assert code == 200, raw
    refused = json.loads(raw)["refused"]
    assert [r["access_node"] for r in refused] == sorted(n.name for n in fleet.nodes)
    assert all(r["value"] == "'api.example.com api.example.org'" and r["paths"] == ["http/api.conf"] for r in refused)
    assert all(r["message"].startswith("template http_upstream.conf.j2: refusing value") for r in refused)
    code, raw = controller.get("/upstream/web/health", {"X-Auth-Token": controller.token()})
    assert code == 200 and json.loads(raw)["refused"] == [], raw
    assert "render: " in controller.tail(200) and "upstream api: template http_upstream.conf.j2" in controller.tail(200)

    killed = time.monotonic()
    web[0].stop()
    wait_for(
        lambda: all(role(n, "web", web[0].hostname) == "down" for n in fleet.nodes),
        10,
        lambda: f"{web[0].hostname} rendered down beside the refused api\n{controller.tail()}",
    )
    wait_for(lambda: serving(fleet), 5, "nginx serving it")
    assert time.monotonic() - killed <= FALL * INTERVAL + 2
    for node in fleet.nodes:
        assert (node.config_dir / "http" / "api.conf").read_bytes() == kept[node.name]  # byte for byte
        assert node.get("api.example.com")[1] in ("b2", "b3") and node.get("api.example.org")[0] == 404

    status_json = _status(fleet, "--output", "json")
    nodes = json.loads(status_json.stdout)["access_nodes"]
    assert all([r["upstream"] for r in nodes[n.name]["refused"]] == ["api"] for n in fleet.nodes), nodes
    gate = _status(fleet, "--detailed-exitcode")
    assert gate.returncode == 2 and "refused upstream api: template http_upstream.conf.j2" in gate.stdout, gate.stdout

    body["listen"] = {"server_names": ["api.example.com"]}  # the owner takes the second name back
    code, answer = controller.put("/upstream/api", body)
    assert code == 200, answer
    wait_for(lambda: "obreconcile_upstream_refused{" not in controller.metrics(), 15, "the refusal to go")
    wait_for(lambda: not controller.status().get("refused_upstreams", ["?"]), 5, "status without refusals")
