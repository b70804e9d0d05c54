"""A writer that stops (sleeps) at a chosen point of a big sync, to be killed there by a test.

    python -m tests.store.killed_writer STORE_URL PHASE UPSTREAMS

PHASE ``commit``: inside the store transaction (SQLite: objects written, not committed; etcd:
changes staged, not flipped). PHASE ``fold`` (etcd): committed, not yet folded into obj/.
Prints ``READY`` when it reached the point, then sleeps until killed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from reconciler.store import open_store, sync_manifests
from reconciler.store.etcd import EtcdStore
from reconciler.store.sqlite import SqliteStore
from tests.store.desired import fleet


def _stop_here() -> None:
    print("READY", flush=True)
    time.sleep(120)


def main() -> None:
    url, phase, upstreams = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if phase == "commit":
        write_objects = SqliteStore._write_objects
        stage_chunk = EtcdStore._stage_chunk

        def write_then_stop(self: SqliteStore, *args: Any) -> None:
            write_objects(self, *args)
            _stop_here()

        def stage_then_stop(self: EtcdStore, txid: str, n: int, chunk: Any) -> None:
            stage_chunk(self, txid, n, chunk)
            if n == 2:
                _stop_here()

        SqliteStore._write_objects = write_then_stop  # type: ignore[method-assign,assignment]
        EtcdStore._stage_chunk = stage_then_stop  # type: ignore[method-assign]
    elif phase == "fold":
        EtcdStore._fold = lambda self, txid, revision: _stop_here()  # type: ignore[method-assign]
    store = open_store(url)
    sync_manifests(store, fleet(upstreams))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
