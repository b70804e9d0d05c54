"""tcp and plain-http probes on non-blocking sockets, all watched through one epoll set.

A probe is a small state machine: connect, then (http) send one request and read up to the
status line. A tcp probe closes with a reset (no TIME_WAIT left behind, as HAProxy's checks
do). An http probe reports its outcome at the status line, then reads on until the server
closes (the request says ``Connection: close``), so that the backend sees an orderly close
rather than a reset in its logs; a server that keeps talking past 64 KiB or past the timeout
is reset. The
sockets are not registered with the event loop one by one: they share one ``select.epoll``
set (each socket armed once with ``EPOLLONESHOT``, and leaving the set when it is closed),
whose own descriptor is the only thing the serving loop watches. When it is readable, one
callback takes every ready socket at once. Timeouts are kept in one queue per timeout value
(deadlines in start order) swept every ``SWEEP`` seconds, instead of a loop timer per probe.
At 5,000 checks a second this costs about half of what the loop's per-socket readers and
timers did (docs/serve.md, *Figures*). Linux only (epoll), as is ``serve``.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import select
import socket
import struct
from collections.abc import Callable

from reconciler.health.checks import CheckSpec, Outcome

Done = Callable[[Outcome], None]
End = Callable[[Done, Outcome], None]

SWEEP = 0.05  # seconds between two looks for probes past their timeout
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_STATUS_LINE_MAX = 1024
_BATCH = 1024  # ready sockets taken per callback
_DRAIN_MAX = 65536  # bytes read after the status line while waiting for the server to close
EXPECT_WITHIN = 65536  # bytes of a body looked at for a check's ``expect``
_WRITABLE = select.EPOLLOUT | select.EPOLLONESHOT
_CONNECTING, _READING, _DRAINING = 0, 1, 2
_READABLE = select.EPOLLIN | select.EPOLLONESHOT


class _Attempt:
    __slots__ = (
        "buffer",
        "done",
        "drained",
        "expecting",
        "finished",
        "generation",
        "phase",
        "request",
        "sock",
        "spec",
        "started",
    )

    def __init__(
        self, sock: socket.socket, spec: CheckSpec, request: bytes, done: Done, started: float, generation: int
    ) -> None:
        self.sock, self.spec, self.request, self.done = sock, spec, request, done
        self.started, self.generation = started, generation
        self.buffer = b""
        self.drained = 0
        self.phase = _CONNECTING
        self.finished = False  # closed (its outcome may have come before, while draining)
        self.expecting = False  # the status passed; the outcome waits for the body (spec.expect)


class SocketProbes:
    """The tcp and plain-http probes under way; ``end(done, outcome)`` reports each one once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, end: End) -> None:
        self._loop, self._end = loop, end
        self._epoll = select.epoll()
        self._attempts: dict[int, _Attempt] = {}  # by socket descriptor
        self._deadlines: dict[float, collections.deque[_Attempt]] = {}  # by timeout, in start order
        self._sweeper: asyncio.TimerHandle | None = None
        self._generation = 0
        loop.add_reader(self._epoll.fileno(), self._ready)

    def __len__(self) -> int:
        return len(self._attempts)

    def connect(
        self, spec: CheckSpec, family: int, address: tuple[str, int], request: bytes, done: Done, started: float
    ) -> None:
        """Start one probe: tcp when ``request`` is empty, else send it and read the status line."""
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:  # out of file descriptors
            self._end(done, Outcome(False, reason(e), self._loop.time() - started))
            return
        sock.setblocking(False)
        if not request:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        code = sock.connect_ex(address)
        if code not in (errno.EINPROGRESS, 0):
            sock.close()
            self._end(done, Outcome(False, strerror(code), self._loop.time() - started))
            return
        attempt = _Attempt(sock, spec, request, done, started, self._generation)
        fd = sock.fileno()
        self._attempts[fd] = attempt
        self._epoll.register(fd, _WRITABLE)  # writable once connected (or refused)
        queue = self._deadlines.get(spec.timeout)
        if queue is None:
            queue = self._deadlines[spec.timeout] = collections.deque()
        queue.append(attempt)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(SWEEP, self._sweep)

    def close(self) -> None:
        """Stop every probe under way without an outcome."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._loop.remove_reader(self._epoll.fileno())
        for fd, attempt in list(self._attempts.items()):
            self._drop(fd, attempt)
        self._deadlines.clear()
        self._epoll.close()

    def _ready(self) -> None:
        self._generation += 1
        generation = self._generation
        for fd, _ in self._epoll.poll(0, _BATCH):
            attempt = self._attempts.get(fd)
            if attempt is None or attempt.generation == generation:
                continue  # a descriptor closed, or reused by a probe started during this batch
            if attempt.phase == _CONNECTING:
                self._connected(fd, attempt)
            elif attempt.phase == _READING:
                self._read(fd, attempt)
            else:
                self._drain(fd, attempt)

    def _connected(self, fd: int, attempt: _Attempt) -> None:
        code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._finish(fd, attempt, strerror(code))
        elif not attempt.request:
            self._finish(fd, attempt, "")
        else:
            try:
                attempt.sock.send(attempt.request)  # a few hundred bytes into an empty socket buffer
            except OSError as e:
                self._finish(fd, attempt, reason(e))
                return
            attempt.phase = _READING
            self._epoll.modify(fd, _READABLE)

    def _read(self, fd: int, attempt: _Attempt) -> None:
        try:
            data = attempt.sock.recv(_STATUS_LINE_MAX)
        except BlockingIOError:
            self._epoll.modify(fd, _READABLE)
            return
        except OSError as e:
            self._finish(fd, attempt, reason(e))
            return
        if not data:
            self._finish(fd, attempt, "closed before answering")
            return
        attempt.buffer += data
        line, found, _ = attempt.buffer.partition(b"\r\n")
        if not found and len(attempt.buffer) < _STATUS_LINE_MAX:
            self._epoll.modify(fd, _READABLE)
            return
        parts = line.split(b" ", 2)
        if not (len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and len(parts[1]) == 3):
            self._finish(fd, attempt, "not an HTTP answer")
            return
        status = int(parts[1])
        if attempt.spec.expect and attempt.spec.accepts(status):
            attempt.expecting = True  # reported when the text is found, or when the body ends without it
            self._look(attempt)
        else:
            self._report(attempt, "" if attempt.spec.accepts(status) else f"status {status}")
        # The outcome is known; the rest of the answer is read until the server closes (it was
        # asked to), so that the backend sees an orderly close and not a reset in its logs.
        attempt.phase = _DRAINING
        attempt.drained = len(attempt.buffer)
        self._drain(fd, attempt)

    def _drain(self, fd: int, attempt: _Attempt) -> None:
        try:
            data = attempt.sock.recv(_DRAIN_MAX)
        except BlockingIOError:
            self._epoll.modify(fd, _READABLE)
            return
        except OSError:
            data = b""
        if data:
            attempt.drained += len(data)
            if attempt.expecting:
                attempt.buffer += data
                self._look(attempt)
            if attempt.drained <= _DRAIN_MAX:
                self._epoll.modify(fd, _READABLE)
                return
        self._drop(fd, attempt, orderly=not data)  # a server that keeps talking is hung up on
        if attempt.expecting:  # the body ended (or grew past the limit) without the text
            attempt.expecting = False
            self._report(attempt, f"body lacks {attempt.spec.expect.decode()!r}")

    def _look(self, attempt: _Attempt) -> None:
        """Report a pass once the body (after the header) holds ``spec.expect``."""
        _, found, body = attempt.buffer.partition(b"\r\n\r\n")
        if found and attempt.spec.expect in body[:EXPECT_WITHIN]:
            attempt.expecting = False
            attempt.buffer = b""
            self._report(attempt, "")

    def _finish(self, fd: int, attempt: _Attempt, detail: str) -> None:
        """Close (with a reset) and report ``detail``: '' passed, else why not."""
        self._drop(fd, attempt)
        self._report(attempt, detail)

    def _report(self, attempt: _Attempt, detail: str) -> None:
        self._end(attempt.done, Outcome(detail == "", detail, self._loop.time() - attempt.started))

    def _drop(self, fd: int, attempt: _Attempt, orderly: bool = False) -> None:
        """Forget the socket and close it: with a reset (no TIME_WAIT on our side, whatever was
        left unread), or plainly when the server closed first (``orderly``)."""
        del self._attempts[fd]
        attempt.finished = True
        if not orderly and attempt.request:  # (tcp probes' sockets have had it from the start)
            attempt.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        attempt.sock.close()  # its last descriptor: it leaves the epoll set

    def _sweep(self) -> None:
        now = self._loop.time()
        for timeout, queue in list(self._deadlines.items()):
            while queue and (queue[0].finished or queue[0].started + timeout <= now):
                attempt = queue.popleft()
                if attempt.finished:
                    continue
                if attempt.phase == _DRAINING and not attempt.expecting:  # answered, the server never closed
                    self._drop(attempt.sock.fileno(), attempt)
                else:
                    self._finish(attempt.sock.fileno(), attempt, f"no answer within {timeout:g}s")
            if not queue:
                del self._deadlines[timeout]
        self._sweeper = self._loop.call_later(SWEEP, self._sweep) if self._deadlines else None


def strerror(code: int) -> str:
    return "connection refused" if code == errno.ECONNREFUSED else os.strerror(code).lower()


def reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return "connection refused"
    text = str(error) or type(error).__name__
    return text[:200]
