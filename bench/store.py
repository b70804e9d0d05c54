"""Benchmark the desired-state store: sync 10,000 upstreams into SQLite and a real etcd.

    python -m bench.store [--upstreams 10000] [--backends 10] [--access-nodes 10] [--only sqlite|etcd]

For each store: the first sync into an empty store, a re-sync with one upstream changed (the
object writes are counted: it must be exactly one), a re-sync with nothing changed, and a read
of the whole desired state back. The etcd is started here (Debian's etcd-server, 127.0.0.1,
a temporary directory) with its default limits, and stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from reconciler.manifest.model import DesiredState
from reconciler.store import Store, open_store, sync_manifests
from tests.services.etcd import start_etcd
from tests.store.desired import fleet, upstream, with_upstream

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    began = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - began


def run(store: Store, desired: DesiredState, label: str) -> dict[str, float]:
    first, t_first = timed(lambda: sync_manifests(store, desired))
    name = sorted(desired.upstreams)[len(desired.upstreams) // 2]
    changed = with_upstream(desired, upstream(name, len(desired.upstreams[name].nodes), weight=9))
    writes_before = store.writes
    again, t_again = timed(lambda: sync_manifests(store, changed))
    writes = store.writes - writes_before
    same, t_same = timed(lambda: sync_manifests(store, changed))
    back, t_read = timed(store.desired_state)
    assert back == changed, "read-back differs from what was synced"
    assert writes == 1 and again.writes == 1 and same.writes == 0
    print(
        f"{label:7} first sync {t_first:7.2f} s ({first.writes} objects) | "
        f"re-sync 1 changed {t_again:6.2f} s ({writes} write) | "
        f"re-sync unchanged {t_same:6.2f} s | read back {t_read:6.2f} s | "
        f"re-sync/first {t_again / t_first:5.1%}"
    )
    return {"first": t_first, "resync": t_again, "unchanged": t_same, "read": t_read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstreams", type=int, default=10_000)
    parser.add_argument("--backends", type=int, default=10, help="backend nodes per upstream")
    parser.add_argument("--access-nodes", type=int, default=10)
    parser.add_argument("--only", choices=["sqlite", "etcd"])
    args = parser.parse_args()
    desired, t_build = timed(lambda: fleet(args.upstreams, args.access_nodes, args.backends))
    objects = sum(len(desired.of_kind(k)) for k in ("Group", "Upstream", "AccessNode"))
    print(
        f"{args.upstreams} upstreams x {args.backends} backends, {args.access_nodes} access nodes "
        f"({objects} objects; model built in {t_build:.2f} s)"
    )
    with tempfile.TemporaryDirectory(prefix="obr-bench-store-") as tmp:
        if args.only in (None, "sqlite"):
            with open_store(f"sqlite:///{Path(tmp) / 'state.db'}") as store:
                run(store, desired, "sqlite")
        if args.only in (None, "etcd"):
            server = start_etcd(Path(tmp) / "etcd")
            try:
                with open_store(server.url("bench")) as store:
                    run(store, desired, "etcd")
            finally:
                server.stop()


if __name__ == "__main__":
    main()
