"""SQLite access: connections, migrations, and group commit.

All SQL of the project lives in the `store` package as plain functions taking a
connection as first argument (`accounts.py`, `messages.py`). They run in one of
two ways:

* `Database.read(fn, ...)` / `Database.write(fn, ...)` — synchronous, used by
  the CLI and by the executor threads of the daemon;
* `AsyncDatabase.read(...)` / `.write(...)` — for the event loop. Writes are
  queued to one writer thread that runs every write waiting at that moment in a
  single transaction (each in its own SAVEPOINT, so one failure does not undo
  the others) and commits once: many concurrent deliveries share one fsync of
  the WAL (group commit).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from .schema import MIGRATIONS

T = TypeVar("T")
log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
MAX_BATCH = 256


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsynced at every commit, so a commit is on disk when it returns.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # Statement and savepoint journals in memory: on disk (once past 64 KiB) each of their
    # writes could wait several milliseconds behind the fsyncs of concurrent deliveries.
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; returns the number applied."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    applied = 0
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied += 1
    return applied


def mergeable(merged: Callable[[sqlite3.Connection, list[tuple]], list[Any]]):
    """Mark a write function `fn(conn, *args)` whose calls queued together may run as one
    `merged(conn, [args, ...])`, returning their results in order: fewer statements per
    group commit (each statement lets go of the GIL, and getting it back can take long
    while the event loop is busy)."""
    def mark(fn: Callable[..., T]) -> Callable[..., T]:
        fn.merged = merged  # type: ignore[attr-defined]
        return fn
    return mark


def _runs(jobs: list[tuple[Callable[..., Any], tuple, dict]]) -> list[list[tuple[Callable[..., Any], tuple, dict]]]:
    """Consecutive jobs of one mergeable function (without keyword arguments) grouped; others alone."""
    groups: list[list[tuple[Callable[..., Any], tuple, dict]]] = []
    for job in jobs:
        fn, _, kwargs = job
        if groups and not kwargs and getattr(fn, "merged", None) is not None and groups[-1][0][0] is fn \
                and not groups[-1][0][2]:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


class Database:
    """Synchronous access with one writer connection and a connection per reader thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._write_lock = threading.Lock()
        self._writer = connect(path)
        migrate(self._writer)
        self._local = threading.local()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            return fn(conn, *args, **kwargs)
        finally:
            conn.execute("COMMIT")

    def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args, **kwargs)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def write_batch(self, jobs: list[tuple[Callable[..., Any], tuple, dict]]) -> list[tuple[bool, Any]]:
        """Run many writes in one transaction; each result is (ok, value-or-exception).

        Each job runs in its own savepoint, so one that fails leaves the others' work;
        a job alone in its transaction needs none (its failure rolls everything back).
        Consecutive jobs of a function marked `mergeable` run as one call of its merged
        form; if that fails, they run again one by one, so a failure stays their own.
        """
        results: list[tuple[bool, Any]] = []
        savepoints = len(jobs) > 1
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                for group in _runs(jobs):
                    merged = getattr(group[0][0], "merged", None)
                    if merged is not None and len(group) > 1:
                        conn.execute("SAVEPOINT merged")
                        try:
                            values = merged(conn, [args for _, args, _ in group])
                        except Exception:  # noqa: BLE001 - retried one by one below
                            conn.execute("ROLLBACK TO merged")
                            conn.execute("RELEASE merged")
                        else:
                            conn.execute("RELEASE merged")
                            results.extend((True, value) for value in values)
                            continue
                    for fn, args, kwargs in group:
                        if savepoints:
                            conn.execute("SAVEPOINT job")
                        try:
                            value = fn(conn, *args, **kwargs)
                        except Exception as exc:  # noqa: BLE001 - handed back to the caller
                            if savepoints:
                                conn.execute("ROLLBACK TO job")
                                conn.execute("RELEASE job")
                            else:
                                conn.execute("ROLLBACK")
                                return [(False, exc)]
                            results.append((False, exc))
                        else:
                            if savepoints:
                                conn.execute("RELEASE job")
                            results.append((True, value))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return results

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()


class AsyncDatabase:
    """The event loop's view: reads in a small pool, writes group-committed."""

    def __init__(self, db: Database, readers: int = 4) -> None:
        self.db = db
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="db-read")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run_writer, name="db-write", daemon=True)
        self._thread.start()

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self.db.read(fn, *args, **kwargs))

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.enqueue(future, fn, *args, **kwargs)
        return await future

    def enqueue(self, future: asyncio.Future, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue a write whose outcome settles `future` (created on the event loop); callable from
        any thread, so an executor job can hand over its commit without a trip through the loop."""
        self._queue.put((fn, args, kwargs, future.get_loop(), future))

    def _run_writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                results = self.db.write_batch([(fn, args, kw) for fn, args, kw, _, _ in batch])
            except Exception as exc:  # the commit itself failed (disk full, I/O error)
                log.error("database commit failed: %s", exc)
                results = [(False, exc)] * len(batch)
            for (_, _, _, loop, future), (ok, value) in zip(batch, results):
                loop.call_soon_threadsafe(_settle, future, ok, value)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
