"""A real nginx for tests: its own prefix, its own ports on 127.0.0.1, always stopped.

    nginx = Nginx(tmp_path / "nginx")          # nothing runs yet
    config_dir = nginx.install(files)          # rendered files under PREFIX/openbalancer
    nginx.configure(http=include_http(config_dir), stream=include_stream(config_dir))
    nginx.test()                               # `nginx -t`; fails the test with nginx's stderr
    nginx.start()                              # runs until nginx.stop() (or the fixture ends)
    nginx.reload()                             # `nginx -s reload`, waits for the new workers

The configuration is a minimal nginx.conf (stream module loaded, pid and logs in the prefix,
one worker, ``daemon off`` so the master is this process's child) with the caller's text in
its ``http {}`` and ``stream {}`` blocks. nginx is found on PATH or at /usr/sbin/nginx; when it
is missing the test fails (it never skips): run ``make test`` or ``scripts/system-packages``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

STREAM_MODULE = Path(os.environ.get("NGINX_STREAM_MODULE", "/usr/lib/nginx/modules/ngx_stream_module.so"))
CONFIG_DIR = "openbalancer"


def nginx_binary() -> str:
    """The nginx executable; fails the calling test when there is none."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        pytest.fail("nginx is not installed: run `make test` or `bash scripts/system-packages` (Debian nginx-light)")
    if not STREAM_MODULE.is_file():
        pytest.fail(f"nginx's stream module {STREAM_MODULE} is missing: install Debian's libnginx-mod-stream")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def include_http(config_dir: Path) -> str:
    """The documented include line for the ``http {}`` block (docs/render.md)."""
    return f"include {config_dir}/http/*.conf;"


def include_stream(config_dir: Path) -> str:
    """The documented include line for the ``stream {}`` block (docs/render.md)."""
    return f"include {config_dir}/stream/*.conf;"


class Nginx:
    """One nginx under ``prefix``; see the module's docstring."""

    def __init__(self, prefix: Path) -> None:
        self.binary = nginx_binary()
        self.prefix = prefix
        self.conf = prefix / "nginx.conf"
        self.pid_file = prefix / "nginx.pid"
        self.error_log = prefix / "error.log"
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("tmp", "logs"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)

    def install(self, files: Mapping[str, str], name: str = CONFIG_DIR) -> Path:
        """Write rendered ``files`` (relative path → text) into PREFIX/``name``, replacing it."""
        directory = self.prefix / name
        shutil.rmtree(directory, ignore_errors=True)
        for sub in ("http", "stream"):
            (directory / sub).mkdir(parents=True)
        for relative, text in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return directory

    def configure(self, http: str = "", stream: str = "") -> Path:
        """Write nginx.conf with ``http`` and ``stream`` as the bodies of those blocks."""
        tmp = self.prefix / "tmp"
        temp_paths = "\n".join(f"    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy"))
        temp_paths += "\n" + "\n".join(f"    {kind}_temp_path {tmp}/{kind};" for kind in ("fastcgi", "uwsgi", "scgi"))
        self.conf.write_text(
            f"load_module {STREAM_MODULE};\n"
            + ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\ndaemon off;\npid {self.pid_file};\nerror_log {self.error_log} notice;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n    access_log off;\n{temp_paths}\n    {http}\n}}\n"
            f"stream {{\n    {stream}\n}}\n"
        )
        return self.conf

    def _command(self, *args: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.error_log), *args]

    def check(self) -> subprocess.CompletedProcess[str]:
        """Run ``nginx -t``; the result, whatever it is."""
        return subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30, check=False)

    def test(self) -> None:
        """Run ``nginx -t``; fail the test with nginx's own words when it refuses the configuration."""
        result = self.check()
        if result.returncode != 0:
            pytest.fail(f"nginx -t refused {self.conf}:\n{result.stderr}", pytrace=False)

    def start(self, timeout: float = 10.0) -> None:
        """Start nginx and wait until it listens (its pid file is written after the sockets are bound)."""
        assert self.process is None, "nginx is already running"
        self.pid_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                self.process = None
                pytest.fail(f"nginx exited at start:\n{stderr}\n{self._log_tail()}", pytrace=False)
            if self.pid_file.is_file() and self.pid_file.read_text().strip() == str(self.process.pid):
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"nginx did not start within {timeout}s:\n{self._log_tail()}", pytrace=False)

    def reload(self, timeout: float = 10.0) -> None:
        """``nginx -s reload`` and wait until the old worker has exited (only the new configuration runs)."""
        assert self.process is not None, "nginx is not running"
        before = self._log().count("reconfiguring")
        subprocess.run(self._command("-s", "reload"), capture_output=True, text=True, timeout=30, check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self._log()
            if log.count("reconfiguring") > before:
                after = log[log.rindex("reconfiguring") :]
                if "[emerg]" in after:
                    pytest.fail(f"nginx refused the reloaded configuration:\n{after}", pytrace=False)
                if "start worker process" in after and "exited with code" in after:
                    return
            time.sleep(0.02)
        pytest.fail(f"nginx did not reload within {timeout}s:\n{self._log_tail()}", pytrace=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx (SIGTERM to the master, SIGKILL after ``timeout``); safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.is_file() else ""

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._log().splitlines()[-lines:])
