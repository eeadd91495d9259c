"""What a running daemon shares between its front doors: settings, database, executor."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from .auth.throttle import AuthThrottle
from .config import Settings
from .events.hub import Hub
from .store import AsyncDatabase, Database
from .store.aio import Fsyncer
from .store.renames import FlagRenames
from .telemetry.metrics import Metrics
from .tls import server_context

T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.adb = AsyncDatabase(db, readers=settings.db_read_threads)
        # fsyncs, password hashing, DKIM/RSA and header parsing run here, off the loop.
        self.pool = ThreadPoolExecutor(max_workers=settings.work_threads, thread_name_prefix="work")
        # Message files being fsynced (`core.deliver`): a pool of their own, so that a delivery's
        # fsync never queues behind parsing or DNS work, nor that work behind a burst of fsyncs.
        self.store_pool = ThreadPoolExecutor(max_workers=settings.store_threads, thread_name_prefix="store")
        self.fsyncer = Fsyncer(self.store_pool)  # through kernel AIO from the loop where it can
        self.renames = FlagRenames()  # message files renamed after flag changes, when IMAP is quiet
        self.listeners: dict[str, tuple[str, int]] = {}
        self.hub = Hub()
        self.auth_throttle = AuthThrottle(settings.auth_failure_limit, settings.auth_failure_window,
                                          settings.auth_block_time)
        self.queue_wakeup = asyncio.Event()  # set when new mail is queued
        self.idempotency_in_flight: set[tuple[str, str]] = set()
        self.metrics = Metrics()
        # Listener name -> callable giving its open session count (for /metrics and health).
        self.session_counts: dict[str, Callable[[], int]] = {}
        self.metrics.state.add("openmailserver_sessions", "Open sessions per listener", "listener",
                               lambda: {name: count() for name, count in self.session_counts.items()})
        self.started_at = time.time()
        # One TLS context for every listener: reloading certificates (SIGHUP) reaches them all.
        self.tls_context = server_context(settings.cert_path, settings.key_path)

    def reload_tls(self) -> None:
        """Load the certificate files again; new handshakes use them, open sessions keep theirs."""
        self.tls_context.load_cert_chain(self.settings.cert_path, self.settings.key_path)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in the executor."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        self.fsyncer.close()
        self.adb.close()
        self.renames.close()
        self.pool.shutdown(wait=True)
        self.store_pool.shutdown(wait=True)
        self.db.close()
