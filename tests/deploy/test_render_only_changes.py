"""A run renders only the files whose inputs changed since the live release (the marker's
``inputs``); drift, a template change and a first deploy still render what they must."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.deploy.conftest import address
from tests.services.backends import HttpBackend
from tests.services.fleet import Fleet

COUNT = 20


def _upstreams(backends: list[HttpBackend], weight: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {f"u{i:02}": [address(backends[i % 4])] for i in range(COUNT)}
    out["u07"] = {"nodes": [{"hostname": address(backends[3]), "weight": weight}]}
    return out


def _apply(fleet: Fleet, *args: str | Path) -> dict[str, dict[str, Any]]:
    done = fleet.cli("apply", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return {r["access_node"]: r for r in json.loads(done.stdout)["access_nodes"]}


def _counts(results: dict[str, dict[str, Any]]) -> set[tuple[str, int, int]]:
    return {(r["status"], r["rendered"], r["uploaded"]) for r in results.values()}


def test_a_run_renders_only_the_files_whose_inputs_changed(
    fleet: Fleet, backends: list[HttpBackend], tmp_path: Path
) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    assert _counts(_apply(fleet, manifests)) == {("converged", COUNT + 1, COUNT + 1)}  # first deploy: all
    for node in fleet.nodes:
        inputs = node.marker()["inputs"]
        assert set(inputs) == {f"http/u{i:02}.conf" for i in range(COUNT)}  # the default file has none
    assert _counts(_apply(fleet, manifests)) == {("unchanged", 1, 0)}  # no-op: the default file only

    fleet.write_manifests(manifests, _upstreams(backends, weight=4))
    assert _counts(_apply(fleet, manifests)) == {("converged", 2, 2)}  # u07 and the revision's file
    for node in fleet.nodes:
        assert "weight=4" in node.live_files()["http/u07.conf"]
        assert node.get("u07.example.com")[1] == "b3"

    # drift: a file edited on the node is rendered again (its sha256 is not the recorded one)
    edited = fleet.nodes[0]
    before = edited.live_files()["http/u03.conf"]
    (edited.config_dir / "http" / "u03.conf").write_text("# edited by hand\n")
    results = _apply(fleet, manifests)
    assert (results[edited.name]["status"], results[edited.name]["rendered"]) == ("converged", 2)
    assert edited.live_files()["http/u03.conf"] == before
    assert {(r["status"], r["rendered"]) for n, r in results.items() if n != edited.name} == {("unchanged", 1)}


def test_new_templates_render_every_file_again(fleet: Fleet, backends: list[HttpBackend], tmp_path: Path) -> None:
    manifests = fleet.write_manifests(tmp_path / "m", _upstreams(backends))
    _apply(fleet, manifests)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "http_upstream.conf.j2").write_text(
        '{% extends "obreconcile/http_upstream.conf.j2" %}\n{% block server_extra %}\n    # custom\n{% endblock %}\n'
    )
    assert _counts(_apply(fleet, manifests, "--templates", templates)) == {("converged", COUNT + 1, COUNT + 1)}
    for node in fleet.nodes:
        assert "# custom" in node.live_files()["http/u00.conf"]
    assert _counts(_apply(fleet, manifests, "--templates", templates)) == {("unchanged", 1, 0)}
