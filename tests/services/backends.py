"""Real backends for traffic tests, in threads of the test process, on 127.0.0.1 only.

with HttpBackend("a1") as a1:      # answers every request with body "a1"
    ...  a1.port, a1.hits          # requests it received
    ...  a1.release()              # answers the requests held at /hold... (held until then)
with HttpBackend("s1", tls=(cert, key)) as s1:   # the same over https
with EchoBackend() as echo:        # a tcp server that sends back what it gets
    ...  echo.port
with WebSocketEcho() as ws:        # aiohttp: websocket echo at /ws, "plain" at any other path
    ...  ws.port
with answering(respond) as address:  # "127.0.0.1:PORT": every GET answered by respond(handler)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.services.sshd import free_port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _IdentityServer

    def do_GET(self) -> None:
        self.server.record(self)
        if self.path.startswith("/hold"):
            self.server.released.wait(10)
        body = self.server.identity.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.identity)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _IdentityServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, identity: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.identity = identity
        self.hits = 0
        self.last_headers: dict[str, str] = {}
        self.last_path = ""
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._lock:
                self._open.discard(request)

    def server_close(self) -> None:
        """Close the listening socket and every open connection (nginx keeps some alive)."""
        super().server_close()
        with self._lock:
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits += 1
            self.last_headers = dict(handler.headers.items())
            self.last_path = handler.path


class _Threaded:
    """Serve in a thread from __init__ until stop() (also on leaving a with block)."""

    _server: socketserver.TCPServer

    def _serve(self) -> None:
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._stopped = False

    def stop(self) -> None:
        """Stop serving and close the listening socket (connections are then refused)."""
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpBackend(_Threaded):
    """An HTTP server answering every GET with its identity (body and X-Backend header).

    ``tls`` (certificate, key): serve https with that certificate.
    """

    def __init__(self, identity: str, tls: tuple[Path, Path] | None = None) -> None:
        self.identity = identity
        self._identity_server = self._server = _IdentityServer(identity)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._identity_server.socket = context.wrap_socket(self._identity_server.socket, server_side=True)
        self._serve()

    @property
    def hits(self) -> int:
        return self._identity_server.hits

    @property
    def last_headers(self) -> dict[str, str]:
        return self._identity_server.last_headers

    @property
    def last_path(self) -> str:
        """The path (and query) of the last request, as the backend received it."""
        return self._identity_server.last_path

    def release(self) -> None:
        """Answer the requests held at /hold..., and the later ones at once."""
        self._identity_server.released.set()

    def stop(self) -> None:
        self.release()
        super().stop()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass  # the client went away


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class EchoBackend(_Threaded):
    """A tcp server that sends back every byte it receives."""

    def __init__(self) -> None:
        self._server = _EchoServer(("127.0.0.1", 0), _Echo)
        self._serve()


class _RestartableHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RestartableServer

    def do_GET(self) -> None:
        body = self.server.identity.encode()
        self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _RestartableServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, identity: str, port: int) -> None:
        super().__init__(("127.0.0.1", port), _RestartableHandler)
        self.identity, self.hits = identity, 0
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self.lock:
                self.open.discard(request)

    def server_close(self) -> None:
        """Close the listening socket and every open connection: a killed backend answers nothing."""
        super().server_close()
        with self.lock:
            for connection in self.open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class RestartableBackend:
    """An HTTP backend on a fixed 127.0.0.1 port that can be stopped (killed: every open
    connection is shut down) and started again on the same port: a backend that dies and comes back."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.port = free_port()
        self._server: _RestartableServer | None = None
        self.start()

    @property
    def hostname(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        deadline = time.monotonic() + 5
        while True:
            try:
                self._server = _RestartableServer(self.identity, self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class WebSocketEcho:
    """An aiohttp server in its own thread: a websocket echo at /ws, ``plain`` at any other path."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the websocket backend did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._echo)
        app.router.add_get("/{tail:.*}", self._plain)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _plain(self, request: web.Request) -> web.Response:
        return web.Response(text="plain")

    async def _echo(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(f"echo:{message.data}")
        return ws

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> WebSocketEcho:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def answering(respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 that answers every GET with ``respond(handler)`` (status,
    headers and body: the handler's own methods); yields its ``host:port`` and stops it after."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            respond(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
