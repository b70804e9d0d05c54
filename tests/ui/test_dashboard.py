"""The dashboard in a real headless Chromium against a real `serve`, fleet (two nginx access
nodes, one over SSH) and backends. The tests share one browser, fleet and controller, in order;
each leaves the backends as it found them. Checks run every 200 ms, rise 2, fall 2.

Upstream ``web``: b0 (tier 0) and b1 (tier 1, min_servers 1); ``shop``: b2 and b3, with a
description full of markup. Applied with a template of the user's own that refuses an upstream
with two server names (tests/services/templates.py).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from reconciler.api.ui import CSP
from tests.serve.conftest import FALL, INTERVAL, Backend, Serve, wait_for, write_manifests
from tests.services.fleet import Fleet
from tests.services.fleet_fixtures import fleet_under_test
from tests.services.sshd import free_port
from tests.services.templates import joined_names_templates
from tests.ui.conftest import (
    PASSWORDS,
    artefacts,
    backend_cell,
    browser_fetch,
    go,
    http_get,
    login,
    session_token,
    text_of,
    users_manifest,
    wait_until,
)

MARKUP = 'Ships <script>window.__xss = 1</script> "onmouseover="window.__xss = 2" x="<img src=x onerror=window.__xss=3>'


@dataclass
class World:
    fleet: Fleet
    backends: list[Backend]
    controller: Serve

    @property
    def url(self) -> str:
        return self.controller.url

    def traffic(self, host: str, n: int = 8) -> set[str]:
        return {node.get(host)[1] for node in self.fleet.nodes for _ in range(n)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with contextmanager(fleet_under_test)(tmp, 2) as fleet:
        backends = [Backend(f"b{i}") for i in range(4)]
        controller: Serve | None = None
        try:
            b0, b1, b2, b3 = (b.hostname for b in backends)
            upstreams: dict[str, dict[str, Any]] = {
                "web": {"checks": ["fast"], "nodes": [{"hostname": b0}, {"hostname": b1, "failover": 1}]},
                "shop": {"checks": ["fast"], "description": MARKUP, "nodes": [{"hostname": b2}, {"hostname": b3}]},
            }
            manifests = write_manifests(fleet, tmp / "m", upstreams)
            users_manifest(manifests)
            applied = fleet.cli("apply", manifests, extra=["--templates", str(joined_names_templates(tmp / "t"))])
            assert applied.returncode == 0, applied.stdout + applied.stderr
            controller = Serve(fleet, tmp / "serve.log")
            controller.wait_converged()
            yield World(fleet, backends, controller)
        finally:
            if controller is not None:
                controller.stop()
            for backend in backends:
                backend.stop()


def cells(browser: WebDriver, rows: str) -> list[list[str]]:
    """The text of every cell of the rows matched by ``rows``, read at once (the page may redraw)."""
    script = "return [...document.querySelectorAll(arguments[0])].map((r) => [...r.cells].map((c) => c.textContent))"
    return list(browser.execute_script(script, rows))


def as_user(browser: WebDriver, url: str, user: str) -> None:
    """Be logged in to ``url`` as ``user`` (logging the previous user out)."""
    if browser.current_url.startswith(url) and text_of(browser, "#who") == f"signed in as {user}":
        return
    if browser.current_url.startswith(url) and browser.find_element(By.ID, "logout").is_displayed():
        browser.find_element(By.ID, "logout").click()
    login(browser, url, user, PASSWORDS[user])


def screenshot(browser: WebDriver, name: str) -> Path:
    path = artefacts() / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def test_the_page_comes_with_a_strict_csp_and_no_inline_script(world: World) -> None:
    status, headers, body = http_get(world.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CSP
    assert "default-src 'self'" in CSP and "script-src 'self'" in CSP and "unsafe" not in CSP
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    page = body.decode()
    assert "<script>" not in page and "style=" not in page and "http" not in page.replace("http-equiv", "")
    for asset in ("app.js", "app.css", "upstreams.js"):
        status, headers, _ = http_get(f"{world.url}/ui/{asset}")
        assert status == 200 and headers["Content-Security-Policy"] == CSP
    assert http_get(world.url + "/ui/..%2fapp.py")[0] == 404


def test_login_shows_every_node_converged(world: World, browser: WebDriver) -> None:
    as_user(browser, world.url, "operator")
    go(browser, "fleet")
    names = [n.name for n in world.fleet.nodes]
    for name in names:

        def converged(node: str = name) -> bool:
            return text_of(browser, f'tr[data-node="{node}"] .state') == "converged"

        wait_until(browser, converged, 10, f"{name} converged")
    summary = browser.find_element(By.ID, "fleet-summary").text
    assert world.controller.name in summary and "healthy" in summary
    assert text_of(browser, f'tr[data-node="{names[0]}"] td:nth-child(5)').startswith(("obreconcile serve", "apply"))
    screenshot(browser, "fleet")


def admin_call(world: World, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The API as the bootstrap admin (SUPER): what an operator would change with curl."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-Auth-Token": world.controller.token(), "Content-Type": "application/json"}
    request = urllib.request.Request(world.url + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_a_node_that_cannot_be_reached_shows_unreachable_then_converged(world: World, browser: WebDriver) -> None:
    as_user(browser, world.url, "operator")
    go(browser, "fleet")
    node = world.fleet.nodes[0]  # reached over SSH
    state = f'tr[data-node="{node.name}"] .state'
    status, body = admin_call(world, "GET", f"/node/{node.name}")
    assert status == 200, body
    wrong = {**body, "connection": {**body["connection"], "port": free_port()}}  # nothing listens there
    assert admin_call(world, "PUT", f"/node/{node.name}", wrong)[0] == 200
    weight = f"/upstream/shop/node/{world.backends[3].hostname}"
    try:  # a change to render: the controller pushes, and cannot connect
        assert admin_call(world, "PATCH", weight, {"weight": 3})[0] == 200
        wait_until(browser, lambda: text_of(browser, state) == "unreachable", 20, "the node shown unreachable")
        error = text_of(browser, f'tr[data-node="{node.name}"] .error-text')
        assert error, "an unreachable node shows why"
        screenshot(browser, "fleet-unreachable")
    finally:
        assert admin_call(world, "PUT", f"/node/{node.name}", body)[0] == 200
        assert admin_call(world, "PATCH", weight, {"weight": 1})[0] == 200
    wait_until(browser, lambda: text_of(browser, state) == "converged", 30, "the node converged again")


def test_a_killed_backend_turns_down_without_a_reload_and_the_next_tier_takes_over(
    world: World, browser: WebDriver
) -> None:
    b0, b1 = world.backends[:2]
    as_user(browser, world.url, "operator")
    upstreams = go(browser, "upstreams")
    wait_until(browser, lambda: backend_cell(browser, "web", b0.hostname, "health") == "up", 10, "b0 up")
    head = upstreams.find_element(By.CSS_SELECTOR, 'tbody[data-upstream="web"] .upstream-head')
    assert "tier 0 in use" in head.text
    assert backend_cell(browser, "web", b1.hostname, "role") == "backup"
    browser.execute_script("window.__sameDocument = 42")

    killed = time.monotonic()
    b0.stop()
    try:
        wait_until(
            browser, lambda: backend_cell(browser, "web", b0.hostname, "health") == "down", 10, "b0 down on the page"
        )
        took = time.monotonic() - killed
        assert took <= FALL * INTERVAL + 2, f"the row turned down {took:.2f}s after the kill"
        assert browser.execute_script("return window.__sameDocument") == 42  # no reload
        wait_until(browser, lambda: "tier 1 in use" in head.text, 5, "tier 1 in use")
        wait_until(browser, lambda: backend_cell(browser, "web", b1.hostname, "role") == "enabled", 5, "b1 enabled")
        assert "refused" in backend_cell(browser, "web", b0.hostname, "check")
        assert backend_cell(browser, "web", b0.hostname, "since").endswith("s ago")
        latency = backend_cell(browser, "web", b1.hostname, "latency")
        assert latency.endswith(("ms", " s")), latency
        wait_for(lambda: world.traffic("web.example.com") == {"b1"}, 10, "nginx sending web to b1 only")
        screenshot(browser, "upstreams")
    finally:
        b0.start()
    wait_until(browser, lambda: backend_cell(browser, "web", b0.hostname, "health") == "up", 10, "b0 back up")
    wait_until(browser, lambda: "tier 0 in use" in head.text, 5, "tier 0 in use again")
    assert browser.execute_script("return window.__sameDocument") == 42


def test_drain_from_the_page_stops_nginx_sending_traffic(world: World, browser: WebDriver) -> None:
    b2 = world.backends[2]
    as_user(browser, world.url, "operator")
    go(browser, "upstreams")
    wait_until(browser, lambda: world.traffic("shop.example.com") == {"b2", "b3"}, 10, "shop on b2 and b3")
    button = f'tbody[data-upstream="shop"] tr[data-backend="{b2.hostname}"] button'
    wait_until(browser, lambda: text_of(browser, button) == "Drain", 5, "a Drain button")
    browser.find_element(By.CSS_SELECTOR, button).click()
    dialog = browser.find_element(By.ID, "confirm")
    wait_until(browser, dialog.is_displayed, 5, "the confirmation")
    assert b2.hostname in dialog.text and "shop" in dialog.text
    assert browser.switch_to.active_element.get_attribute("id") == "confirm-cancel"  # the safe choice first
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)  # cancelled: nothing happens
    wait_until(browser, lambda: not dialog.is_displayed(), 5, "the dialog closed")
    time.sleep(1.5)
    assert backend_cell(browser, "shop", b2.hostname, "health") == "up"

    browser.find_element(By.CSS_SELECTOR, button).click()
    wait_until(browser, dialog.is_displayed, 5, "the confirmation")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_until(browser, lambda: backend_cell(browser, "shop", b2.hostname, "health") == "drained", 5, "b2 drained")
    wait_for(lambda: world.traffic("shop.example.com", 12) == {"b3"}, 10, "nginx no longer sending shop to b2")
    assert world.controller.status()["revision"] > 0

    wait_until(browser, lambda: text_of(browser, button) == "Undrain", 5, "an Undrain button")
    browser.find_element(By.CSS_SELECTOR, button).send_keys(Keys.ENTER)  # by keyboard this time
    wait_until(browser, dialog.is_displayed, 5, "the confirmation")
    browser.find_element(By.ID, "confirm-ok").send_keys(Keys.ENTER)
    wait_until(browser, lambda: backend_cell(browser, "shop", b2.hostname, "health") == "up", 5, "b2 back")
    wait_for(lambda: world.traffic("shop.example.com", 12) == {"b2", "b3"}, 10, "traffic to b2 again")


def test_history_lists_changes_and_deploys_newest_first(world: World, browser: WebDriver) -> None:
    as_user(browser, world.url, "operator")
    b3 = world.backends[3]
    path = f"/upstream/shop/node/{b3.hostname}"
    token = session_token(browser)
    assert browser_fetch(browser, "PATCH", path, token, {"weight": 2}) == 200
    try:
        go(browser, "history")
        first = "#history-audit tbody tr:first-child"
        wait_until(browser, lambda: "Upstream shop" in text_of(browser, first), 5, "the change on top")
        assert "API" in text_of(browser, first) and "operator" in text_of(browser, first)
        audit = cells(browser, "#history-audit tbody tr")
        assert any("apply (manifests)" in row for row in map(" ".join, audit))
        revisions = [int(row[1]) for row in audit]
        assert revisions == sorted(revisions, reverse=True)
        wait_until(browser, lambda: len(cells(browser, "#history-deploys tbody tr[data-node]")) >= 2, 5, "deploys")
        screenshot(browser, "history")
        for _ in range(20):  # the apply's deploys are the oldest: page back to them
            deploys = cells(browser, "#history-deploys tbody tr[data-node]")
            assert [d[0] for d in deploys] == sorted((d[0] for d in deploys), reverse=True)
            assert all(d[4].startswith(("obreconcile serve ctl-", "apply ")) for d in deploys), deploys
            if any(d[4].startswith("apply ") for d in deploys):
                break
            more = browser.find_element(By.ID, "deploys-more")
            assert more.is_displayed(), "no older deploys, and no apply among them"
            more.click()

            def grown(count: int = len(deploys)) -> bool:
                return len(cells(browser, "#history-deploys tbody tr[data-node]")) > count

            wait_until(browser, grown, 5, "older deploys")
        else:
            pytest.fail("the apply's deploys never showed up")
    finally:
        assert browser_fetch(browser, "PATCH", path, token, {"weight": 1}) == 200


def test_a_read_only_user_sees_no_button_and_a_forged_drain_is_refused(world: World, browser: WebDriver) -> None:
    as_user(browser, world.url, "operator")
    old = session_token(browser)
    browser.find_element(By.ID, "logout").click()
    wait_until(browser, lambda: browser.find_element(By.ID, "login").is_displayed(), 5, "logged out")
    assert browser.execute_script("return sessionStorage.getItem('obreconcile.session')") is None
    assert browser_fetch(browser, "GET", "/status", old) == 401  # logout revoked the token

    login(browser, world.url, "viewer", PASSWORDS["viewer"])
    go(browser, "upstreams")
    b2 = world.backends[2]
    wait_until(browser, lambda: backend_cell(browser, "shop", b2.hostname, "health") == "up", 10, "the viewer's rows")
    assert browser.find_elements(By.CSS_SELECTOR, "#upstreams-table button") == []
    token = session_token(browser)
    path = f"/upstream/shop/node/{b2.hostname}"
    assert browser_fetch(browser, "PATCH", path, token, {"force_status": "down"}) == 403
    assert browser_fetch(browser, "PATCH", path, None, {"force_status": "down"}) == 401
    time.sleep(1.2)
    assert backend_cell(browser, "shop", b2.hostname, "health") == "up"


def test_an_upstream_the_renderer_refuses_is_shown_on_it_and_in_the_fleet(world: World, browser: WebDriver) -> None:
    as_user(browser, world.url, "viewer")
    go(browser, "upstreams")
    badge = 'tbody[data-upstream="shop"] .upstream-head .badge.refused'
    code, body = admin_call(world, "GET", "/upstream/shop")
    assert code == 200, body
    two_names = {**body, "listen": {"server_names": ["shop.example.com", "shop.example.org"]}}
    code, answer = admin_call(world, "PUT", "/upstream/shop", two_names)  # the template cannot render two
    assert code == 200, answer
    try:
        names = sorted(n.name for n in world.fleet.nodes)
        wait_until(browser, lambda: text_of(browser, badge).startswith(f"REFUSED on {', '.join(names)}: "), 15, "the badge")
        assert "refusing value 'shop.example.com shop.example.org'" in text_of(browser, badge)
        assert "1 refused by the renderer" in text_of(browser, "#upstreams-counts")
        assert not browser.find_element(By.CSS_SELECTOR, 'tbody[data-upstream="web"] .badge.refused').is_displayed()
        go(browser, "fleet")
        summary = 'dd[data-term="Upstreams refused by the renderer"]'
        wait_until(browser, lambda: text_of(browser, summary) == "shop", 5, "the fleet's line")
        assert browser.find_element(By.CSS_SELECTOR, summary).get_attribute("class") == "bad"
        screenshot(browser, "refused")
    finally:
        code, answer = admin_call(world, "PUT", "/upstream/shop", body)
        assert code == 200, answer
    go(browser, "upstreams")
    wait_until(browser, lambda: not browser.find_element(By.CSS_SELECTOR, badge).is_displayed(), 15, "the badge gone")


def test_markup_in_a_description_is_shown_as_text_and_runs_nothing(world: World, browser: WebDriver) -> None:
    as_user(browser, world.url, "viewer")
    go(browser, "upstreams")
    description = 'tbody[data-upstream="shop"] .upstream-head .description'
    wait_until(browser, lambda: text_of(browser, description) == MARKUP, 5, "the description")
    head = browser.find_element(By.CSS_SELECTOR, description)
    ActionChains(browser).move_to_element(head).perform()
    time.sleep(0.3)
    assert browser.execute_script("return window.__xss") is None
    assert browser.find_elements(By.CSS_SELECTOR, "#upstreams-table script, #upstreams-table img") == []
    assert browser.find_elements(By.CSS_SELECTOR, "[onmouseover], [onerror]") == []


def test_a_lost_connection_is_shown(world: World, browser: WebDriver, tmp_path: Path) -> None:
    other = Serve(world.fleet, tmp_path / "other.log", admin=False)  # a second controller: not the master
    try:
        wait_for(lambda: http_get(other.url + "/")[0] == 200, 30, "the second controller answering")
        login(browser, other.url, "operator", PASSWORDS["operator"])
        go(browser, "upstreams")
        banner = browser.find_element(By.ID, "connection")
        wait_until(
            browser, lambda: backend_cell(browser, "web", world.backends[0].hostname, "health") == "up", 10, "rows"
        )
        assert not banner.is_displayed()
        other.stop()  # serve is gone: every request is refused
        wait_until(browser, banner.is_displayed, 4, "the lost-connection banner")
        assert "Connection to serve lost" in banner.text
        assert "offline" in (browser.find_element(By.TAG_NAME, "body").get_attribute("class") or "")
        screenshot(browser, "connection-lost")
    finally:
        other.stop()
        browser.execute_script("sessionStorage.clear()")
        browser.get("about:blank")
