"""SIGINT and SIGTERM during apply: finish what is in hand, record it, report it, exit 130.

The first signal sets an event that apply reads before it starts an access node and before
it changes one (``ApplySettings.interrupt``): nodes not started yet are reported ``skipped``,
a node in the middle of its deploy script finishes it (it ends on its old or its new
release, verified), and apply records and prints every result as usual, then exits 130.
A second signal leaves at once (exit 130, nothing recorded): the node-side script of a node
in hand sees its connection close and puts its previous release back itself
(``reconciler.deploy.scripts``, "restore").
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for ^C
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interruptible() -> Iterator[threading.Event]:
    """An event set by the first SIGINT/SIGTERM while this is entered (main thread only)."""
    event = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if event.is_set():
            os.write(2, f"\n{name} again: leaving now; a node in hand puts its previous release back\n".encode())
            os._exit(EXIT_INTERRUPTED)
        event.set()
        os.write(
            2,
            f"\n{name}: starting no more access nodes; the ones in hand finish their step "
            "(a second signal leaves at once)\n".encode(),
        )

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield event
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
