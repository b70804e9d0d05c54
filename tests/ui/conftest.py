"""Fixtures of the dashboard tests: one headless Chromium per module (Selenium, Debian's
chromium and chromedriver), a real `serve` with a real fleet and backends, and the artefacts
directory (screenshots, figures), gitignored: ``test-artefacts/ui/`` or $OBRECONCILE_ARTEFACTS.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.server import FAST_HASHER
from tests.services.fleet import ROOT

CHROMIUM = os.environ.get("OBRECONCILE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OBRECONCILE_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,720",
)
PASSWORDS = {"operator": "operator-password", "viewer": "viewer-password"}


def artefacts() -> Path:
    """Where screenshots and measured figures go (never committed)."""
    where = Path(os.environ.get("OBRECONCILE_ARTEFACTS", ROOT / "test-artefacts")) / "ui"
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the module, with a fresh profile; quit at the end."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists() and shutil.which(binary) is None:
            pytest.fail(f"{binary} is missing: scripts/system-packages installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def users_manifest(directory: Path) -> None:
    """``operator`` in group ops (GLOBAL_RW, from write_manifests) and ``viewer`` (GLOBAL_RO only)."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "openbalancer/v1", "kind": "Group", "name": "viewers", "global_permissions": ["GLOBAL_RO"]},
    ]
    for name, group in (("operator", "ops"), ("viewer", "viewers")):
        docs.append(
            {
                "apiVersion": "openbalancer/v1",
                "kind": "User",
                "name": name,
                "password_hash": FAST_HASHER.hash(PASSWORDS[name]),
                "groups": [group],
            }
        )
    (directory / "users.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))


def wait_until(driver: WebDriver, condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (which may read the page) until truthy; fail naming ``what``."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=(LookupError,)).until(
            lambda _: condition()
        )
    except TimeoutException:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")


def text_of(driver: WebDriver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def backend_cell(driver: WebDriver, upstream: str, hostname: str, cell: str) -> str:
    return text_of(driver, f'tbody[data-upstream="{upstream}"] tr[data-backend="{hostname}"] .{cell}')


def login(driver: WebDriver, url: str, user: str, password: str) -> None:
    driver.get(url + "/#fleet")
    wait_until(driver, lambda: driver.find_element(By.ID, "login-user").is_displayed(), 10, "the login form")
    name = driver.find_element(By.ID, "login-user")
    name.clear()
    name.send_keys(user)
    field = driver.find_element(By.ID, "login-password")
    field.clear()
    field.send_keys(password)
    field.submit()
    wait_until(driver, lambda: driver.find_element(By.ID, "nav").is_displayed(), 15, f"{user} logged in")


def go(driver: WebDriver, page: str) -> WebElement:
    driver.find_element(By.CSS_SELECTOR, f'#nav a[data-page="{page}"]').click()
    section = driver.find_element(By.ID, f"page-{page}")
    wait_until(driver, section.is_displayed, 5, f"the {page} page")
    return section


def session_token(driver: WebDriver) -> str:
    return str(json.loads(driver.execute_script("return sessionStorage.getItem('obreconcile.session')"))["token"])


FETCH = """
const [method, path, token, body, done] = arguments;
const headers = {"Content-Type": "application/json"};
if (token) headers["X-Auth-Token"] = token;
fetch(path, {method, headers, body: body === null ? undefined : JSON.stringify(body)})
  .then((r) => done(r.status), (e) => done(String(e)));
"""


def browser_fetch(driver: WebDriver, method: str, path: str, token: str | None, body: Any = None) -> Any:
    """A request made by the page itself (same origin, what any script there could send)."""
    return driver.execute_async_script(FETCH, method, path, token, body)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError:  # refused: not listening (yet)
        return 0, {}, b""


@dataclass
class Figures:
    """Figures measured in the browser, written to the artefacts directory as JSON."""

    path: Path

    def add(self, **values: Any) -> None:
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        data.update(values, measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.path.write_text(json.dumps(data, indent=2) + "\n")
