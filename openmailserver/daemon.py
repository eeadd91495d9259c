"""`openmailserver serve`: every listener on one asyncio loop (docs/architecture.md).

Sockets are bound before anything else starts, so a port that is taken or
privileged stops the daemon at once with a message naming the port and the
fix. SIGTERM/SIGINT stop accepting, let sessions finish, flush the store and
exit well within 10 seconds. Under systemd (`Type=notify`) the daemon reports
READY=1 once every listener is up and STOPPING=1 when shutdown begins; SIGHUP
reloads TLS certificates and the settings that can change live (ops/reload.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
from typing import Awaitable, Callable

import uvicorn

from .config import LISTENER_PORTS, Settings
from .delivery.queue import QueueRunner
from .dns.resolver import install as install_resolver
from .ops import pidfile, systemd
from .ops.reload import reload as reload_runtime
from .runtime import Runtime
from .store import Database
from .store.reconcile import reconcile
from .webhooks.dispatcher import Dispatcher

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 8.0

class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def bind_socket(name: str, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    setting = LISTENER_PORTS[name]
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        where = f"{name} port {port} on {host} (setting {setting})"
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{where} is already in use. Stop the program using it, or choose another port: "
                f"--set {setting}=PORT, OPENMAILSERVER_{setting.upper()}=PORT, or 0 to disable it.") from None
        if exc.errno == errno.EACCES:
            raise StartupError(
                f"{where} needs privileges (ports below 1024). Run as root or with "
                f"CAP_NET_BIND_SERVICE (the systemd unit grants it), use `openmailserver serve --dev` "
                f"for unprivileged ports, or set {setting} to a port >= 1024.") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"{where}: address {host} is not on this machine; fix the bind/api_host setting."
                               ) from None
        raise StartupError(f"{where}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class _UvicornServer(uvicorn.Server):
    """uvicorn on our loop; the daemon owns signal handling."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


# A front door: given the runtime and its bound socket, serve until cancelled.
Starter = Callable[[Runtime, socket.socket], Awaitable[Callable[[], Awaitable[None]]]]


async def _start_api(rt: Runtime, sock: socket.socket) -> Callable[[], Awaitable[None]]:
    from .api.app import create_app

    config = uvicorn.Config(create_app(rt), log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, server_header=False)
    server = _UvicornServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()

    async def stop() -> None:
        server.should_exit = True
        await task

    return stop


def _starters() -> dict[str, Starter]:
    """The listeners this version implements."""
    from .imap.server import start_imap, start_imaps
    from .smtp.inbound import start_mx
    from .smtp.submission import start_implicit_tls, start_starttls

    return {"api": _start_api, "smtp": start_mx, "submission": start_implicit_tls,
            "submission_starttls": start_starttls, "imap": start_imap, "imaps": start_imaps}


async def _start_service(rt: Runtime, service) -> Callable[[], Awaitable[None]]:
    """A background service beside the listeners: the outbound queue, the webhook dispatcher."""
    runner = service(rt)
    task = asyncio.create_task(runner.run())

    async def stop() -> None:
        await runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return stop


async def _serve(settings: Settings, ready: Callable[[Runtime], None] | None,
                 reload_settings: Callable[[], Settings] | None = None) -> None:
    starters = _starters()
    wanted = settings.listeners()
    sockets: dict[str, socket.socket] = {}
    try:
        for name, (host, port) in wanted.items():
            sockets[name] = bind_socket(name, host, port)
    except StartupError:
        for sock in sockets.values():
            sock.close()
        raise

    db = Database(settings.db_path)
    report = reconcile(db, settings.mail_root)
    if report.adopted or report.dropped or report.tmp_removed or report.incomplete_removed:
        log.info("reconcile: adopted %d, dropped %d, renamed %d, removed %d partial files from tmp/ and %d "
                 "incomplete ones", report.adopted, report.dropped, report.renamed, report.tmp_removed,
                 report.incomplete_removed)
    install_resolver(settings)
    rt = Runtime(settings, db)
    stoppers: list[Callable[[], Awaitable[None]]] = []
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)

    serving = False

    def on_sighup() -> None:  # `systemctl reload`: certificates and live settings (see ops/reload.py)
        log.info("SIGHUP: reloading")
        if serving:
            systemd.notify_reloading("reloading")
        try:
            reload_runtime(rt, reload_settings)
        except Exception:  # a failed reload must never take the daemon down
            log.exception("reload failed")
        if serving:
            systemd.notify_ready(_status(rt))

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        for name, sock in sockets.items():
            stoppers.append(await starters[name](rt, sock))
            rt.listeners[name] = sock.getsockname()[:2]
            log.info("listening: %s on %s:%d", name, *rt.listeners[name])
        for service in (QueueRunner, Dispatcher):
            stoppers.insert(0, await _start_service(rt, service))
        pidfile.write(settings)
        # What start-up built (modules, settings, the runtime) lives as long as the daemon:
        # set it aside, so the garbage collector's full passes walk only what came later.
        gc.freeze()
        if ready:
            ready(rt)
        serving = True
        systemd.notify_ready(_status(rt))
        await stop_event.wait()
        serving = False
        log.info("shutting down")
        systemd.notify_stopping("shutting down")
    finally:
        results = await asyncio.wait_for(
            asyncio.gather(*(stop() for stop in reversed(stoppers)), return_exceptions=True),
            timeout=SHUTDOWN_GRACE)
        for result in results:
            if isinstance(result, Exception):
                log.warning("listener stopped with an error: %s", result)
        rt.close()
        pidfile.remove(settings)
        log.info("stopped")


def _status(rt: Runtime) -> str:
    return "serving " + ", ".join(f"{name} {port}" for name, (_, port) in rt.listeners.items())


def run(settings: Settings, ready: Callable[[Runtime], None] | None = None,
        reload_settings: Callable[[], Settings] | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP reloads (`reload_settings` rebuilds the settings)."""
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(settings, ready, reload_settings))
