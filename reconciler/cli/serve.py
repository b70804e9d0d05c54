"""`obreconcile serve` and `obreconcile converge`: click commands only; the work is in reconciler.serve.

``serve`` mounts the REST API (``reconciler.api.app.create_app(store, view, metrics_token=...)``)
with the controller as its view, and runs the controller's loops beside it on one event loop
until SIGTERM or SIGINT. ``converge`` is one pass from the store alone, for cron.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import click

from reconciler.cli.context import Context, connection_options, pass_context, ssh_settings, verify_timeout_option
from reconciler.errors import ObreconcileError
from reconciler.store import Store

if TYPE_CHECKING:  # aiohttp and the controller are imported by the commands that use them
    from aiohttp import web

    from reconciler.resolve import Resolver
    from reconciler.serve.controller import Controller

log = logging.getLogger("obreconcile.serve")


def parse_listen(text: str) -> tuple[str, int]:
    """('127.0.0.1', 8700) from '127.0.0.1:8700'; IPv6 as '[::1]:8700'."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise click.BadParameter(f"{text!r}: write an IPv6 address in brackets, [::1]:8700")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError as e:
        raise click.BadParameter(f"{text!r} is not IPv4:PORT or [IPv6]:PORT") from e
    if not 0 < number < 65536:
        raise click.BadParameter(f"{text!r}: the port must be 1-65535")
    return str(address), number


def _logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@click.command("serve")
@click.option(
    "--listen", default="127.0.0.1:8700", show_default=True, help="Address of the REST API: IPv4:PORT or [IPv6]:PORT."
)
@click.option(
    "--drift-interval",
    type=click.FloatRange(0.5),
    default=60.0,
    show_default=True,
    help="Seconds between drift checks of every access node.",
)
@click.option(
    "--coalesce",
    type=click.FloatRange(0.0),
    default=1.0,
    show_default=True,
    help="Seconds health changes are gathered before a push; each node reloads at most once per window.",
)
@click.option(
    "--lease-ttl",
    type=click.IntRange(1, 300),
    default=10,
    show_default=True,
    help="Seconds of the master lease: another controller takes over within it.",
)
@click.option("--name", "host_name", default=None, help="This management node's name (default HOSTNAME:PORT).")
@click.option("--metrics-token", default=None, help="Require 'Authorization: Bearer TOKEN' on GET /metrics.")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serve HTTPS with this certificate (PEM).",
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False), default=None, help="The private key of --tls-cert (PEM)."
)
@click.option(
    "--bootstrap-admin",
    default=None,
    metavar="NAME",
    help="Create user NAME with SUPER rights and print its password once.",
)
@click.option(
    "--check-concurrency",
    type=click.IntRange(1, 10000),
    default=1000,
    show_default=True,
    help="Checks in flight at once (each holds a socket).",
)
@click.option(
    "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO", show_default=True
)
@verify_timeout_option
@connection_options
@pass_context
def serve_command(
    ctx: Context,
    /,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    bootstrap_admin: str | None,
    log_level: str,
    verify_timeout: float,
    **options: Any,
) -> None:
    """Run the controller: REST API, health checks, convergence on every change, drift correction.

    Only the master (elected through a lease in the store) runs checks and pushes; the others
    serve the API and take over within --lease-ttl when it dies. Runs until SIGTERM or SIGINT,
    then finishes the push in hand, releases its leases and exits 0.
    """
    from reconciler.deploy.apply import ApplySettings
    from reconciler.render.renderer import Renderer
    from reconciler.serve.controller import Controller, ServeSettings

    host, port = parse_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    _logging(log_level)
    settings = ServeSettings(
        host_name=options["host_name"] or f"{socket.gethostname()}:{port}",
        drift_interval=options["drift_interval"],
        coalesce=options["coalesce"],
        lease_ttl=options["lease_ttl"],
        forks=options["forks"],
        ssh=ssh_settings(options),
        check_concurrency=options["check_concurrency"],
        apply=ApplySettings(
            deployed_by=f"obreconcile serve {options['host_name'] or socket.gethostname()}",
            verify_timeout=verify_timeout,
        ),
    )
    tls = _tls(tls_cert, tls_key)
    with ctx.open_store() as store:
        if bootstrap_admin:
            _bootstrap(store, bootstrap_admin)
        controller = Controller(store, settings, Renderer())  # the store's templates: Controller reads them
        asyncio.run(_serve(controller, store, host, port, options["metrics_token"], tls))
    sys.exit(0)


def _tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert or not key:
        return None
    from reconciler.api.tls import ssl_context

    return ssl_context(cert, key)


def _bootstrap(store: Store, name: str) -> None:
    from reconciler.api.auth import bootstrap_admin

    password = bootstrap_admin(store, name)
    click.echo(f"bootstrap admin {name!r}: password {password} (shown once: keep it now)")


def build_app(store: Store, controller: Controller, metrics_token: str | None) -> web.Application:
    """The REST API with ``controller`` as its view."""
    from reconciler.api.app import create_app

    return create_app(store, controller, metrics_token=metrics_token)


async def _serve(
    controller: Controller, store: Store, host: str, port: int, metrics_token: str | None, tls: ssl.SSLContext | None
) -> None:
    from aiohttp import web

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = build_app(store, controller, metrics_token)
    started: list[asyncio.Task[None]] = []

    async def controller_context(app: web.Application) -> AsyncIterator[None]:
        yield
        stop.set()
        for task in started:
            await task

    app.cleanup_ctx.append(controller_context)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        try:
            await site.start()
        except OSError as e:  # the controller has not started: it never took the master lock
            shown = f"[{host}]" if ":" in host else host
            raise ObreconcileError(f"cannot listen on {shown}:{port}: {os.strerror(e.errno) if e.errno else e}") from e
        started.append(asyncio.create_task(controller.run(stop), name="controller"))
        scheme = "https" if tls else "http"
        shown = f"[{host}]" if ":" in host else host
        log.warning(
            "serve: %s listening on %s://%s:%d (store %s)", controller.host_name, scheme, shown, port, store.url
        )
        await stop.wait()
        log.warning("serve: stopping")
    finally:
        await runner.cleanup()
    log.warning("serve: stopped cleanly")


@click.command("converge")
@connection_options
@click.option("--limit", multiple=True, metavar="NAME", help="Only this access node (repeatable).")
@pass_context
def converge_command(ctx: Context, /, limit: tuple[str, ...], **options: Any) -> None:
    """One convergence from the store alone (no manifests), for cron.

    Runs every check once (counted into the rise/fall state kept in the store), renders every
    access node with that health and pushes what differs. Exit 0 when every access node
    converged, 1 otherwise.
    """
    from reconciler.cli.report import (
        apply_document,
        escape,
        print_refused_results,
        refused_summary,
        result_line,
        results_ok,
    )
    from reconciler.deploy.apply import default_deployer
    from reconciler.deploy.fleet import FleetSettings, apply_fleet
    from reconciler.deploy.plan import StoreRef
    from reconciler.render.renderer import Renderer

    settings = FleetSettings(
        forks=options["forks"],
        limit=limit,
        ssh=ssh_settings(options),
    )
    with ctx.open_store() as store:
        stored = store.templates()  # a controller renders with the store's templates only
        renderer = Renderer(stored.sources if stored else None)
        snapshot = store.snapshot()
        state = snapshot.desired_state()
        renderer.resolver.remember(store.known_addresses())
        health, flipped = asyncio.run(_check_once(store, state, renderer.resolver))
        ref = StoreRef(store.store_id(), snapshot.revision)
        echo = (
            None if ctx.output == "json" else (lambda r: ctx.out.print(result_line(r), highlight=False, soft_wrap=True))
        )
        results = apply_fleet(state, ref, renderer, settings, on_result=echo, health=health)
        store.record_addresses(renderer.resolver.learned())
        for result in results:
            if (record := result.record(snapshot.revision, f"converge {default_deployer()}")) is not None:
                store.record_deploy(record)
        store_url = store.url
    if ctx.output == "json":
        document = apply_document(store_url, snapshot.revision, results, {"changes": [], "writes": 0})
        document["health"] = {"flipped": flipped, "backends": health}
        ctx.emit_json(document)
    else:
        down = sorted(f"{u}/{h}" for u, hosts in health.items() for h, up in hosts.items() if not up)
        ctx.out.print(
            f"Converge: store revision {snapshot.revision}; {flipped} check(s) changed state; down: {', '.join(down) or 'none'}; "
            f"{sum(r.status == 'converged' for r in results)} converged, {sum(r.status == 'unchanged' for r in results)} unchanged, "
            f"{sum(r.status == 'failed' for r in results)} failed.",
            markup=False,
            soft_wrap=True,
        )
        if refused := refused_summary(results):
            ctx.out.print(f"[bold red]{escape(refused)}[/]", highlight=False, soft_wrap=True)
        print_refused_results(ctx.err, results)
    if not results_ok(results):  # a node failed, or an upstream was refused (the rest converged)
        sys.exit(1)


async def _check_once(store: Store, state: Any, resolver: Resolver) -> tuple[dict[str, dict[str, bool]], int]:
    """Every check run once, counted into the stored rise/fall state (which is saved back)."""
    from reconciler.health.monitor import Monitor
    from reconciler.health.probe import Prober

    async with Prober(resolver=resolver) as prober:
        monitor = Monitor(prober, lambda upstream: None)
        monitor.load(await asyncio.to_thread(store.health_records))
        flipped = await monitor.run_once(state)
        await asyncio.to_thread(store.record_health, monitor.take_dirty())
        return monitor.health(), flipped
