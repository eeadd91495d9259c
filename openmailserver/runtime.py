"""What a running daemon shares between its front doors: settings, database, executor."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from .config import Settings
from .events.hub import Hub
from .interprocess.board import Board
from .store import AsyncDatabase, Database, mailstate
from .store.aio import Fsyncer
from .store.renames import FlagRenames
from .store.throttle import AuthThrottle
from .telemetry.metrics import Metrics
from .tls import server_context

T = TypeVar("T")
_WAKE_QUEUE = {"wake": "queue"}


class Runtime:
    """One worker's services. `board` is the daemon's shared board (a private one outside a
    daemon), `worker` this worker's number, and `broadcast` sends a live message to every
    other worker (`receive` takes theirs)."""

    def __init__(self, settings: Settings, db: Database, board: Board | None = None, worker: int = 1,
                 broadcast: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.settings = settings
        self.db = db
        self._own_board = board is None
        self.board = board if board is not None else Board(1)
        self.worker = worker
        self._broadcast = broadcast
        self.adb = AsyncDatabase(db, readers=settings.db_read_threads)
        # fsyncs, password hashing, DKIM/RSA and header parsing run here, off the loop.
        self.pool = ThreadPoolExecutor(max_workers=settings.work_threads, thread_name_prefix="work")
        # Message files being fsynced (`core.deliver`): a pool of their own, so that a delivery's
        # fsync never queues behind parsing or DNS work, nor that work behind a burst of fsyncs.
        self.store_pool = ThreadPoolExecutor(max_workers=settings.store_threads, thread_name_prefix="store")
        self.fsyncer = Fsyncer(self.store_pool)  # through kernel AIO from the loop where it can
        # Message files renamed after flag changes, when IMAP is quiet, to the names the index holds.
        self.renames = FlagRenames(lambda folder_id, uids: db.read(mailstate.filenames, folder_id, uids))
        self.listeners: dict[str, tuple[str, int]] = {}
        self.hub = Hub(broadcast)
        self.auth_throttle = AuthThrottle(self.adb, settings.auth_failure_limit, settings.auth_failure_window,
                                          settings.auth_block_time)
        self.queue_wakeup = asyncio.Event()  # set when new mail is queued (`wake_queue`)
        self.metrics = Metrics(settings.metrics_dir if board is not None else None)
        self.metrics.state.add("openmailserver_sessions", "Open sessions per listener, in every worker", "listener",
                               lambda: {name: self.board.sessions(name) for name in self.listeners})
        self.started_at = time.time()
        # One TLS context for every listener: reloading certificates (SIGHUP) reaches them all.
        self.tls_context = server_context(settings.cert_path, settings.key_path)

    def wake_queue(self) -> None:
        """New mail is queued: wake the queue, in whichever worker it runs."""
        self.queue_wakeup.set()
        if self._broadcast is not None:
            self._broadcast(_WAKE_QUEUE)

    def receive(self, message: dict[str, Any]) -> None:
        """A live message from another worker."""
        if message == _WAKE_QUEUE:
            self.queue_wakeup.set()
        else:
            self.hub.deliver(message)

    def reload_tls(self) -> None:
        """Load the certificate files again; new handshakes use them, open sessions keep theirs."""
        self.tls_context.load_cert_chain(self.settings.cert_path, self.settings.key_path)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in the executor."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.fsyncer.close()
        if self._own_board:
            self.board.close()
        self.adb.close()
        self.renames.close()
        self.pool.shutdown(wait=True)
        self.store_pool.shutdown(wait=True)
        self.db.close()
