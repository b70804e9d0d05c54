"""The test nginx service itself: it fails (never skips) without nginx, and always stops."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.services import nginx as service
from tests.services.nginx import Nginx, free_port


def test_a_missing_nginx_fails_the_test_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(pytest.fail.Exception, match="nginx is not installed: run `make test`"):
        service.nginx_binary()


def test_a_missing_stream_module_fails_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(service, "STREAM_MODULE", tmp_path / "nope.so")
    with pytest.raises(pytest.fail.Exception, match="libnginx-mod-stream"):
        service.nginx_binary()


def test_start_serves_and_stop_ends_the_master_and_its_workers(nginx: Nginx) -> None:
    port = free_port()
    nginx.configure(http=f"server {{ listen 127.0.0.1:{port}; return 204; }}")
    nginx.test()
    nginx.start()
    pid = int(nginx.pid_file.read_text())
    nginx.stop()
    nginx.stop()  # twice is fine
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_refused_configuration_fails_with_nginx_own_words(nginx: Nginx) -> None:
    nginx.configure(http="server { listen 127.0.0.1:1; bogus_directive on; }")
    with pytest.raises(pytest.fail.Exception, match='unknown directive "bogus_directive"'):
        nginx.test()
