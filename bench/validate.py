"""Benchmark: `validate` of 10,000 upstreams x 10 nodes with 50 access nodes against
PyYAML's CSafeLoader alone on the same files (issue 2's target: at most 2x, < 1 GiB peak).

    .venv/bin/python -m bench.validate [--upstreams 10000] [--rounds 3]

Each measurement runs in a fresh subprocess (so peak RSS is its own), interleaved round by
round because the machine drifts; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.workload import write_workload

_CSAFE = """
import glob, json, resource, sys, time, yaml
files = sorted(glob.glob(sys.argv[1] + '/*.yaml'))
t, c = time.perf_counter(), time.process_time()
for f in files:
    with open(f, 'rb') as fh:
        list(yaml.load_all(fh.read(), Loader=yaml.CSafeLoader))
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({'seconds': time.perf_counter() - t, 'cpu': time.process_time() - c,
                  'peak_mib': u.ru_maxrss / 1024}))
"""

_VALIDATE = """
import json, resource, sys, time
from reconciler.manifest.validate import load_desired_state
t, c = time.perf_counter(), time.process_time()
state = load_desired_state([sys.argv[1]])
print(json.dumps({'seconds': time.perf_counter() - t, 'cpu': time.process_time() - c, 'upstreams': len(state.upstreams),
                  'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _measure(script: str, directory: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", script, str(directory)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _rounds(results: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['seconds']:.2f}" for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstreams", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--access-nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        files = write_workload(directory, args.upstreams, args.nodes, args.access_nodes)
        size = sum(f.stat().st_size for f in files)
        print(
            f"workload: {args.upstreams} upstreams x {args.nodes} nodes, {args.access_nodes} access nodes, "
            f"{len(files)} files, {size / 2**20:.1f} MiB"
        )
        csafe, ours = [], []
        for _ in range(args.rounds):
            csafe.append(_measure(_CSAFE, directory))
            ours.append(_measure(_VALIDATE, directory))
    c = statistics.median(r["seconds"] for r in csafe)
    v = statistics.median(r["seconds"] for r in ours)
    peak = max(r["peak_mib"] for r in ours)
    print(f"CSafeLoader load only : {c:6.2f} s  (rounds: {_rounds(csafe)})")
    print(f"obreconcile validate  : {v:6.2f} s  (rounds: {_rounds(ours)})")
    print(f"ratio validate/load   : {v / c:6.2f}  (target <= 2.0), wall")
    cc = statistics.median(r["cpu"] for r in csafe)
    vc = statistics.median(r["cpu"] for r in ours)
    print(
        f"CPU seconds           : load {cc:.2f}, validate {vc:.2f}, ratio {vc / cc:.2f} (CPU time is steadier on a busy machine)"
    )
    print(f"validate peak RSS     : {peak:6.0f} MiB  (target < 1024)")


if __name__ == "__main__":
    main()
