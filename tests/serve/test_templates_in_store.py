"""Custom templates are desired state: apply records them, serve and converge render with them only."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.serve.conftest import Backend, Serve, serving, wait_for, web_upstream, write_manifests
from tests.services.fleet import Fleet

EXTRA = "    client_max_body_size 10m;  # ours\n"


def _templates(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "http_upstream.conf.j2").write_text(
        '{% extends "obreconcile/http_upstream.conf.j2" %}{% block server_extra %}' + EXTRA + "{% endblock %}"
    )
    return directory


def _ours(fleet: Fleet) -> list[bool]:
    return [EXTRA in n.live_files().get("http/web.conf", "") for n in fleet.nodes]


def test_serve_renders_with_the_templates_apply_recorded_through_two_drift_intervals(
    fleet: Fleet, backends: list[Backend], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    manifests = write_manifests(fleet, tmp_path / "repo" / "manifests", {"web": web_upstream(backends[:2])})
    templates = _templates(tmp_path / "repo" / "templates")
    plan = fleet.cli("plan", manifests, extra=["--templates", str(templates)])
    document = json.loads(plan.stdout)
    assert document["templates"]["change"] and document["templates"]["stored"] is None, plan.stdout
    applied = fleet.cli("apply", manifests, extra=["--templates", str(templates)])
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _ours(fleet) == [True, True]
    reloads = [n.reloads() for n in fleet.nodes]

    controller = serve("--drift-interval", "0.5")  # no --templates: serve has none but the store's
    controller.wait_converged()
    time.sleep(1.5)  # two drift intervals and more: each observed every node and found nothing
    assert _ours(fleet) == [True, True]
    assert [n.reloads() for n in fleet.nodes] == reloads, controller.tail()
    assert "templates: rendering with templates" in controller.tail(200)

    again = fleet.cli("plan", manifests, extra=["--templates", str(templates), "--detailed-exitcode"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["templates"]["change"] is False
    shipped = fleet.cli("plan", manifests)  # the manifests no longer name them: back to the shipped
    assert json.loads(shipped.stdout)["templates"]["text"] == (
        f"templates: templates (digest {json.loads(again.stdout)['templates']['stored']['digest']}) -> the shipped ones"
    )
    controller.stop()
    back = fleet.cli("apply", manifests)
    assert back.returncode == 0 and _ours(fleet) == [False, False], back.stdout + back.stderr
    converge = fleet.cli("converge")  # renders with the store's (none now): nothing to change
    assert converge.returncode == 0 and json.loads(converge.stdout)["summary"]["unchanged"] == 2
    wait_for(lambda: serving(fleet), 5, "nginx serving the shipped templates' files")
