"""``paused()``: no cyclic garbage collection while a large, acyclic structure is built or walked.

Loading, syncing and rendering 10,000 upstreams allocate millions of short-lived containers
beside a large live desired state; every full collection walks all of it again for nothing
(measured: load 16.8 s -> 5.5 s, sync 0.43 s -> 0.25 s, render about a tenth). Nothing built
there forms a reference cycle, so reference counting frees it all the same; collection
resumes when the block ends (and stays off if it was off before).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
