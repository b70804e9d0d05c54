"""One upstream the renderer refuses never stops the others (issue 14, the blast radius of one object).

Seen on real nginx: a render failure of one upstream failed the whole access node's render, so
apply failed every node serving it and every other team's upstream there stopped converging.
Now the node converges without it: its live file is kept byte for byte (absent on a first
deploy), the refusal is reported on the upstream (field and value), and apply exits 1.

The trigger is one a real user hits: a template of their own (``--templates``) that prints the
upstream's server names joined by a space, which the finaliser refuses for an upstream that
has two names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet
from tests.services.templates import joined_names_templates


def _upstreams(backends: list[HttpBackend], weight: int = 1, api_names: tuple[str, ...] = ("api.example.com",)) -> Any:
    return {
        "web": {"nodes": [{"hostname": address(backends[0]), "weight": weight}]},
        "api": {
            "nodes": [{"hostname": address(backends[1]), "weight": weight}],
            "listen": {"server_names": list(api_names)},
        },
        "pg": {
            "nodes": [{"hostname": address(backends[2])}],
            "listen": {"protocol": "tcp", "port": backends[3].port + 1000},
        },
    }


def test_a_refused_upstream_is_kept_as_it_is_live_and_the_others_converge(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    templates = joined_names_templates(tmp_path / "templates")
    manifests = tmp_path / "m"
    first, second, fresh = fleet.nodes
    fleet.write_manifests(manifests, _upstreams(backends), nodes=[first, second])
    applied = fleet.cli("apply", manifests, "--templates", templates)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    kept = {n.name: (n.config_dir / "http" / "api.conf").read_bytes() for n in (first, second)}
    assert all(b"# serves api.example.com\n" in text for text in kept.values())
    # a link made by hand on one node: its release is then sent whole, the kept file copied into it
    os.symlink("/dev/null", second.config_dir / "http" / "by-hand.conf")

    # api gets a second name (refused by the template) and a new weight; web's weight changes too
    fleet.write_manifests(manifests, _upstreams(backends, weight=3, api_names=("api.example.com", "api.example.org")))
    reloads = {n.name: n.reloads() for n in fleet.nodes}
    applied = fleet.cli("apply", manifests, "--templates", templates)
    assert applied.returncode == 1, applied.stdout + applied.stderr
    document = json.loads(applied.stdout)
    assert [r["status"] for r in document["access_nodes"]] == ["converged"] * 3, document["access_nodes"]
    assert document["ok"] is False and document["summary"]["failed"] == 0
    # web's file and the revision's travel; beside the link, the whole release (api.conf copied on the node)
    assert [r["uploaded"] for r in document["access_nodes"]] == [2, 3, 3]
    refused = document["refused_upstreams"]
    assert [(r["access_node"], r["upstream"], r["paths"]) for r in refused] == [
        (n.name, "api", ["http/api.conf"]) for n in fleet.nodes
    ]
    assert all(r["value"] == "'api.example.com api.example.org'" for r in refused)
    assert all(
        r["message"].startswith("template http_upstream.conf.j2: refusing value 'api.example.com api") for r in refused
    )
    for node in fleet.nodes:
        live = node.live_files()
        assert "weight=3" in live["http/web.conf"] and node.get("web.example.com")[1] == "b0"
        assert "stream/pg.conf" in live and "by-hand.conf" not in live
        assert node.served_revision() == node.marker()["revision"] and node.reloads() == reloads[node.name] + 1
        assert node.get("api.example.org")[0] == 404  # the refused change never reached nginx
    for node in (first, second):
        assert (node.config_dir / "http" / "api.conf").read_bytes() == kept[node.name]  # byte for byte
        assert node.get("api.example.com")[1] == "b1"  # and it still answers
        assert "http/api.conf" in node.marker()["digests"]
    assert "http/api.conf" not in fresh.live_files() and "http/api.conf" not in fresh.marker()["digests"]

    # a second apply: nothing to do, no reload, still exit 1 naming the upstream (text for people)
    again = fleet.cli("apply", manifests, "--templates", templates, output="text")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "1 upstream refused (api) on 3 access nodes: left at its last good rendering" in again.stdout
    assert f"refused {first.name}: upstream api: template http_upstream.conf.j2: refusing value" in again.stderr
    assert "kept as it is live: http/api.conf" in again.stderr and "FAILED" not in again.stderr
    assert {n.name: n.reloads() for n in fleet.nodes} == {n: r + 1 for n, r in reloads.items()}

    converge = fleet.cli("converge")  # cron's pass from the store (its templates): the same report
    assert converge.returncode == 1, converge.stdout + converge.stderr
    converged = json.loads(converge.stdout)
    assert [r["status"] for r in converged["access_nodes"]] == ["unchanged"] * 3
    assert [r["upstream"] for r in converged["refused_upstreams"]] == ["api"] * 3

    plan = fleet.cli("plan", manifests, "--templates", templates)
    assert plan.returncode == 1, plan.stdout + plan.stderr  # plan says what apply would: exit 1
    planned = json.loads(plan.stdout)
    assert planned["summary"]["upstreams_refused"] == 1 and not planned["changes"]
    assert all(n["refused_upstreams"][0]["upstream"] == "api" for n in planned["access_nodes"])
    text = fleet.cli("plan", manifests, "--templates", templates, output="text").stdout
    assert f"{first.name}: no changes" in text and "refused: upstream api: template http_upstream.conf.j2" in text

    # fixed: api converges with what it was asked for, exit 0
    fleet.write_manifests(manifests, _upstreams(backends, weight=3, api_names=("api.example.com",)))
    fixed = fleet.cli("apply", manifests, "--templates", templates)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    for node in fleet.nodes:
        assert "weight=3" in node.live_files()["http/api.conf"] and node.get("api.example.com")[1] == "b1"
