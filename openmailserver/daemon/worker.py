"""One worker process: every listener on one asyncio loop, on the sockets the supervisor bound.

A worker serves SMTP, submission, IMAP and the API alike, so the kernel spreads the
connections of every protocol over every core. What must hold for the whole daemon is not
kept here: counters are on the shared `Board`, live events go to the other workers through
the supervisor's relay, and the outbound queue and the webhook dispatcher run in the one
worker that holds their lease in the database (`Singleton`).

SIGTERM/SIGINT stop accepting, let sessions finish the command in progress, flush the store
and exit within 10 seconds; SIGHUP reloads TLS certificates and the settings that can change
live (`ops/reload.py`). A worker whose supervisor goes away stops the same way.

The supervisor imports this module, and with it every front door, before it forks: a worker
starts without importing anything, and the imported code stays in pages the workers share.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from typing import Awaitable, Callable

import uvicorn

from ..api.app import create_app
from ..config import Settings
from ..delivery.queue import QueueRunner
from ..dns.resolver import install as install_resolver
from ..imap.server import start_imap, start_imaps
from ..interprocess.board import Board
from ..interprocess.relay import Link
from ..ops.reload import reload as reload_runtime
from ..runtime import Runtime
from ..smtp.inbound import start_mx
from ..smtp.submission import start_implicit_tls, start_starttls
from ..store import Database, leases
from ..webhooks.dispatcher import Dispatcher

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 8.0
LEASE_SECONDS = 10.0  # a holder that has not renewed for this long is presumed dead
RENEW_EVERY = 2.0


class _UvicornServer(uvicorn.Server):
    """uvicorn on our loop; the daemon owns signal handling."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


# A front door: given the runtime and its bound socket, serve until cancelled.
Starter = Callable[[Runtime, socket.socket], Awaitable[Callable[[], Awaitable[None]]]]


async def _start_api(rt: Runtime, sock: socket.socket) -> Callable[[], Awaitable[None]]:
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
    return {"api": _start_api, "smtp": start_mx, "submission": start_implicit_tls,
            "submission_starttls": start_starttls, "imap": start_imap, "imaps": start_imaps}


class Singleton:
    """A service that runs once per daemon (or per cluster): in whichever worker holds its
    lease. The holder renews the lease every RENEW_EVERY seconds and stops the service as
    soon as it cannot be sure it still holds it; another worker takes over once the lease
    expires, or at once when the supervisor releases a dead worker's leases."""

    def __init__(self, rt: Runtime, name: str, service) -> None:
        self.rt, self.name, self.service = rt, name, service
        self.holder = leases.holder_name(os.getpid())
        self._runner = None
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            asked = loop.time()
            try:
                held = await self.rt.adb.write(leases.acquire, self.name, self.holder, LEASE_SECONDS)
            except Exception:  # noqa: BLE001 - a failed renewal counts as a lost lease
                log.exception("lease %s: renewal failed", self.name)
                held = False
            if held and self._runner is None:
                log.info("lease %s: this worker runs it", self.name)
                self._runner = self.service(self.rt)
                self._task = asyncio.create_task(self._runner.run())
            elif not held and self._runner is not None:
                log.warning("lease %s: lost; stopping it here", self.name)
                await self._stop_service()
            # Sure of the lease until `asked + LEASE_SECONDS`; renew well before.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.1, asked + RENEW_EVERY - loop.time()))
            if self._runner is not None and loop.time() > asked + LEASE_SECONDS - RENEW_EVERY:
                log.warning("lease %s: not renewed in time; stopping it here", self.name)
                await self._stop_service()

    async def _stop_service(self) -> None:
        runner, task = self._runner, self._task
        self._runner = self._task = None
        if runner is not None:
            await runner.stop()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        self._stopping.set()
        await self._stop_service()
        with contextlib.suppress(Exception):
            await self.rt.adb.write(leases.release, self.name, self.holder)


def _reset_inherited_signals() -> None:
    """The supervisor's handlers and wake-up descriptor are not the worker's."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _die_with_parent()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM when the supervisor dies, however it dies."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def run_worker(settings: Settings, index: int, board: Board, link_socket: socket.socket,
               sockets: dict[str, socket.socket], reload_settings: Callable[[], Settings] | None) -> None:
    """The body of a forked worker process; returns when the worker has stopped."""
    _reset_inherited_signals()
    board.index = index
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(settings, index, board, link_socket, sockets, reload_settings))


async def _serve(settings: Settings, index: int, board: Board, link_socket: socket.socket,
                 sockets: dict[str, socket.socket], reload_settings: Callable[[], Settings] | None) -> None:
    install_resolver(settings)
    db = Database(settings.db_path)
    link = Link(link_socket, on_message=lambda message: rt.receive(message))
    rt = Runtime(settings, db, board=board, worker=index + 1, broadcast=link.send)
    link.start()
    starters = _starters()
    stoppers: list[Callable[[], Awaitable[None]]] = []
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    assert link.closed is not None
    link.closed.add_done_callback(lambda _: stop_event.set())

    def on_sighup() -> None:  # `systemctl reload`, passed on by the supervisor
        try:
            reload_runtime(rt, reload_settings)
        except Exception:  # a failed reload must never take the daemon down
            log.exception("reload failed")
        link.control({"reloaded": index})

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        for name, sock in sockets.items():
            stoppers.append(await starters[name](rt, sock))
            rt.listeners[name] = sock.getsockname()[:2]
        for name, service in (("queue", QueueRunner), ("webhooks", Dispatcher)):
            singleton = Singleton(rt, name, service)
            task = asyncio.create_task(singleton.run())
            stoppers.insert(0, _stopper(singleton, task))
        # What start-up built (modules, settings, the runtime) lives as long as the worker:
        # set it aside, so the garbage collector's full passes walk only what came later.
        gc.freeze()
        board.serving()
        link.control({"serving": index})
        heartbeat = asyncio.create_task(_beat(board))
        await stop_event.wait()
        heartbeat.cancel()
        log.info("worker %d shutting down", index + 1)
    finally:
        results = await asyncio.wait_for(
            asyncio.gather(*(stop() for stop in reversed(stoppers)), return_exceptions=True),
            timeout=SHUTDOWN_GRACE)
        for result in results:
            if isinstance(result, Exception):
                log.warning("listener stopped with an error: %s", result)
        link.stop()
        rt.close()


def _stopper(singleton: Singleton, task: asyncio.Task) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await singleton.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return stop


async def _beat(board: Board) -> None:
    while True:
        board.beat()
        await asyncio.sleep(1.0)
