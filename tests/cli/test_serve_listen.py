"""`serve --listen` on a port in use (issue 14): a clear error at once, and the master lock free.

Seen: `internal error: OSError`, and the master lock kept for about 10 s (the controller had
started and won the election before the API's socket was bound).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from reconciler.serve.locks import MASTER_LOCK
from reconciler.store import open_store


def test_a_port_in_use_is_a_clear_error_and_leaves_the_master_lock_free(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", "--store", url, "serve", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        seconds = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: cannot listen on 127.0.0.1:{port}: " in result.stderr, result.stderr
    assert "in use" in result.stderr and "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert seconds < 30, seconds  # start-up alone; the lock check below is what matters
    with open_store(url) as store:
        assert store.lock_holder(MASTER_LOCK) is None
