"""`openmailserver serve`: the supervisor and its worker processes (docs/architecture.md).

The supervisor takes the data directory's lock, binds every listener, runs start-up
reconciliation once, and then forks `workers` worker processes that all serve every
listener on the inherited sockets. It stays small and single-threaded: it passes live
events between the workers (`interprocess.relay`), restarts a worker that dies (with
backoff, and after releasing the dead worker's leases and clearing its counters), passes
SIGHUP and SIGTERM on to every worker, and tells systemd READY=1 once every worker serves
and STOPPING=1 when it stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import pickle
import selectors
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from ..config import Settings
from ..dns.resolver import install as install_resolver
from ..interprocess.board import Board
from ..interprocess.relay import CONTROL, EVENT, PACKET_LIMIT, Outbox, pair
from ..ops import pidfile, systemd
from ..store import Database, leases
from ..store.reconcile import reconcile
from .listeners import StartupError, bind_all

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # SIGTERM to exit, for the whole daemon
LOCK_WAIT = 15.0  # for the workers of a daemon that was killed to finish
RESTART_BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # by how many times a worker died lately
RESTART_FORGET = 60.0  # a worker that lived this long starts the backoff over


@dataclass
class _Worker:
    index: int
    pid: int = 0
    sock: socket.socket | None = None
    outbox: Outbox | None = None
    serving: bool = False
    started_at: float = 0.0
    deaths: list[float] = field(default_factory=list)
    restart_at: float | None = None


def _metrics_files(settings: Settings) -> None:
    """Turn on prometheus_client's multiprocess mode for every worker, in a fresh directory.
    It must happen before prometheus_client is first imported (the workers import it)."""
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    settings.metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)


def worker_count(settings: Settings) -> int:
    """`workers`, where 0 means one per CPU this process may run on."""
    return settings.workers or len(os.sched_getaffinity(0))


def _lock(settings: Settings) -> int:
    """An exclusive lock on the data directory, held (through inheritance) by every process of
    the daemon: a new daemon cannot start while any process of an old one still runs."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise StartupError(f"another openmailserver daemon (or its workers) still serves "
                                   f"{settings.data_dir}; stop it first") from None
            time.sleep(0.1)


class Supervisor:
    def __init__(self, settings: Settings, ready: Callable[[dict], None] | None,
                 reload_settings: Callable[[], Settings] | None) -> None:
        self.settings = settings
        self.ready_callback = ready
        self.reload_settings = reload_settings
        self.workers = [_Worker(i) for i in range(worker_count(settings))]
        self.board: Board | None = None
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.all_ready = False
        self.reloading: set[int] = set()  # workers that have not yet acknowledged a SIGHUP
        self.sockets: dict[str, socket.socket] = {}
        self._signals: list[int] = []

    # -- start ---------------------------------------------------------------------

    def run(self) -> None:
        lock = _lock(self.settings)
        try:
            self.board = Board(len(self.workers), self.settings.board_path)
            _metrics_files(self.settings)
            self.sockets = bind_all(self.settings)
            for name, sock in self.sockets.items():
                log.info("listening: %s on %s:%d", name, *sock.getsockname()[:2])
            self._reconcile()
            self._install_signals()
            pidfile.write(self.settings)
            for worker in self.workers:
                self._start(worker)
            self._loop()
        finally:
            for sock in self.sockets.values():
                sock.close()
            pidfile.remove(self.settings)
            shutil.rmtree(self.settings.metrics_dir, ignore_errors=True)
            if self.board is not None:
                self.board.close()
                with contextlib.suppress(FileNotFoundError):
                    self.settings.board_path.unlink()
            os.close(lock)
            log.info("stopped")

    def _reconcile(self) -> None:
        db = Database(self.settings.db_path)
        try:
            report = reconcile(db, self.settings.mail_root)
            db.write(leases.release_all)  # whatever a daemon that was killed held
        finally:
            db.close()
        if report.adopted or report.dropped or report.tmp_removed or report.incomplete_removed:
            log.info("reconcile: adopted %d, dropped %d, renamed %d, removed %d partial files from tmp/ and %d "
                     "incomplete ones", report.adopted, report.dropped, report.renamed, report.tmp_removed,
                     report.incomplete_removed)

    def _install_signals(self) -> None:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda number, frame: self._signals.append(number))
        self._wakeup = (reader, writer)
        self.selector.register(reader, selectors.EVENT_READ, None)

    def _start(self, worker: _Worker) -> None:
        from .worker import run_worker

        ours, theirs = pair()
        restart = worker.started_at > 0
        # Everything start-up made is shared with the children copy-on-write; keeping the
        # garbage collector from touching it keeps those pages shared.
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                ours.close()
                self.selector.close()
                for other in self.workers:
                    if other.sock is not None:
                        other.sock.close()
                for sock in self._wakeup:
                    sock.close()
                run_worker(self.settings, worker.index, self.board, theirs, self.sockets, self.reload_settings)
            except BaseException:  # noqa: BLE001 - reported, then the process ends
                log.exception("worker %d failed", worker.index + 1)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        worker.pid, worker.sock, worker.outbox = pid, ours, Outbox(ours)
        worker.serving, worker.started_at, worker.restart_at = False, time.monotonic(), None
        self.board.started(worker.index, pid, restart)
        self.selector.register(ours, selectors.EVENT_READ, worker)
        log.info("worker %d started (pid %d)", worker.index + 1, pid)

    # -- the loop ------------------------------------------------------------------

    def _loop(self) -> None:
        deadline: float | None = None
        while True:
            timeout = 1.0
            pending = [w.restart_at for w in self.workers if w.restart_at is not None]
            if pending:
                timeout = max(0.0, min(pending) - time.monotonic())
            for key, mask in self.selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        self._wakeup[0].recv(4096)
                elif mask & selectors.EVENT_READ:
                    self._relay(key.data)
                if key.data is not None and mask & selectors.EVENT_WRITE:
                    self._drain(key.data)
            self._handle_signals()
            self._reap()
            if self.stopping:
                if deadline is None:
                    deadline = time.monotonic() + STOP_TIMEOUT
                if not any(w.pid for w in self.workers):
                    return
                if time.monotonic() > deadline:
                    for w in self.workers:
                        if w.pid:
                            log.error("worker %d did not stop in time; killing it", w.index + 1)
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(w.pid, signal.SIGKILL)
                continue
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None and worker.restart_at <= now:
                    self._start(worker)

    def _handle_signals(self) -> None:
        while self._signals:
            number = self._signals.pop(0)
            if number in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                log.info("shutting down")
                systemd.notify_stopping("shutting down")
                self.stopping = True
                self._tell_all(signal.SIGTERM)
            elif number == signal.SIGHUP and not self.stopping:
                log.info("SIGHUP: reloading every worker")
                if self.all_ready:
                    systemd.notify_reloading("reloading")
                # READY=1 again once every worker has reloaded (`_relay`).
                self.reloading = {w.index for w in self.workers if w.pid}
                self._tell_all(signal.SIGHUP)
                self._reloaded()

    def _tell_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)

    def _relay(self, worker: _Worker) -> None:
        assert worker.sock is not None
        while True:
            try:
                packet = worker.sock.recv(PACKET_LIMIT)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:  # the worker closed its end: it is exiting
                self.selector.unregister(worker.sock)
                worker.sock.close()
                worker.sock = None
                return
            if packet[:1] == EVENT:
                for other in self.workers:
                    if other is not worker and other.outbox is not None and other.sock is not None:
                        if other.outbox.send(packet):
                            self.selector.modify(other.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, other)
            elif packet[:1] == CONTROL:
                message = pickle.loads(memoryview(packet)[1:])
                if "serving" in message:
                    worker.serving = True
                    if not self.all_ready and all(w.serving for w in self.workers):
                        self.all_ready = True
                        self._ready()
                elif "reloaded" in message:
                    self.reloading.discard(worker.index)
                    self._reloaded()

    def _drain(self, worker: _Worker) -> None:
        if worker.outbox is not None and worker.sock is not None and not worker.outbox.flush():
            self.selector.modify(worker.sock, selectors.EVENT_READ, worker)

    def _reloaded(self) -> None:
        if not self.reloading and self.all_ready:
            systemd.notify_ready(self._status())

    def _status(self) -> str:
        return "serving " + ", ".join(f"{name} {sock.getsockname()[1]}" for name, sock in self.sockets.items()) + \
            f" ({len(self.workers)} workers)"

    def _ready(self) -> None:
        status = self._status()
        log.info(status)
        if self.ready_callback is not None:
            self.ready_callback({name: sock.getsockname()[:2] for name, sock in self.sockets.items()})
        systemd.notify_ready(status)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            self._forget(worker)
            if self.stopping:
                continue
            reason = f"exit status {os.waitstatus_to_exitcode(status)}"
            if os.WIFSIGNALED(status):
                reason = f"signal {signal.Signals(os.WTERMSIG(status)).name}"
            now = time.monotonic()
            worker.deaths = [t for t in worker.deaths if now - t < RESTART_FORGET] + [now]
            delay = RESTART_BACKOFF[min(len(worker.deaths) - 1, len(RESTART_BACKOFF) - 1)]
            worker.restart_at = now + delay
            log.error("worker %d (pid %d) died (%s); restarting it in %.0f s", worker.index + 1, pid, reason, delay)

    def _forget(self, worker: _Worker) -> None:
        """A worker is gone: release its leases and its counters, close its link."""
        pid = worker.pid
        worker.pid, worker.serving = 0, False
        if worker.sock is not None:
            self.selector.unregister(worker.sock)
            worker.sock.close()
            worker.sock = None
        worker.outbox = None
        self.board.clear(worker.index)
        self.reloading.discard(worker.index)
        from prometheus_client import multiprocess  # the workers' module, after `_metrics_files`

        multiprocess.mark_process_dead(pid, str(self.settings.metrics_dir))
        db = Database(self.settings.db_path)
        try:
            db.write(leases.release_all, leases.holder_name(pid))
        except Exception:  # noqa: BLE001 - the lease then expires by itself
            log.exception("could not release the leases of worker %d", worker.index + 1)
        finally:
            db.close()


def run(settings: Settings, ready: Callable[[dict], None] | None = None,
        reload_settings: Callable[[], Settings] | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT; SIGHUP reloads (`reload_settings` rebuilds the settings)."""
    install_resolver(settings)
    Supervisor(settings, ready, reload_settings).run()
