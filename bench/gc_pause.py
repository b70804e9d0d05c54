"""How long Python's full garbage collection pauses a process holding a large desired state.

    .venv/bin/python -m bench.gc_pause [--upstreams 10000] [--nodes 10] [--access-nodes 50]

Loads the workload of bench/workload.py (and the health checks' probes of it) as ``serve``
holds them, then times full collections (``gc.collect()``), before and after ``gc.freeze()``.
In ``serve`` a full collection stops the event loop, and with it every health check and API
request, for that long. Printed: milliseconds per collection and the objects the collector
tracks.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from bench.workload import write_workload
from reconciler.health.state import probes_of
from reconciler.manifest.validate import load_desired_state


def timed_collection() -> float:
    started = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstreams", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--access-nodes", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        write_workload(Path(tmp), args.upstreams, args.nodes, args.access_nodes)
        state = load_desired_state((tmp,), 256 << 20)
    probes = probes_of(state)
    pauses = [timed_collection() for _ in range(3)]
    print(
        f"desired state: {len(state.upstreams):,} upstreams, {len(probes):,} checks; {len(gc.get_objects()):,} tracked objects"
    )
    print(f"full collection: {', '.join(f'{p:.0f}' for p in pauses)} ms")
    gc.freeze()
    print(f"after gc.freeze(): {timed_collection():.0f} ms")


if __name__ == "__main__":
    main()
