"""IMAP state shared by the sessions of a daemon: `Shared` (with the login cache) and the cache warmer.

`Shared.of(rt)` gives the one `Shared` of a runtime; both IMAP listeners (143
and 993) use it. The registry is a weak map keyed on the runtime, so nothing is
attached to the `Runtime` object itself. (A `Shared` refers to its runtime, so
its entry lasts as long as the process does; a daemon has one runtime.)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import ssl
import time
import weakref
from typing import Any, Awaitable, Optional

from ..address import parse_address
from ..core import accounts as core_accounts
from ..errors import MailError
from ..mime import structure
from ..runtime import Runtime
from ..store import accounts as store_accounts
from ..store import maildir, mailstate

log = logging.getLogger(__name__)


class LoginCache:
    """Remembers recent successful logins so a client reconnecting does not pay argon2 again.

    Like Dovecot's auth cache: an entry is an HMAC (with a per-process random
    key) of the address, the password *and the stored password hash*, so a
    password change or a deactivated mailbox misses the cache at once. Entries
    live `TTL` seconds; only successes are cached (failures always pay the
    full price and go through the throttle).
    """

    TTL = 300.0
    MAX_ENTRIES = 10_000

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.key = secrets.token_bytes(32)
        self.entries: dict[bytes, float] = {}

    def _digest(self, address: str, password: str, stored: str) -> bytes:
        return hmac.new(self.key, "\0".join((address, password, stored)).encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    async def check(self, username: str, password: str) -> Optional[dict[str, Any]]:
        try:
            parsed = parse_address(username)
        except MailError:
            parsed = None
        if parsed is not None:
            address = f"{parsed.local.lower()}@{parsed.domain}"
            row = await self.rt.adb.read(store_accounts.get_password_hash, address)
            if row is not None and row["active"]:
                digest = self._digest(address, password, row["password_hash"])
                expires = self.entries.get(digest)
                if expires is not None and expires > time.monotonic():
                    return row
        row = await self.rt.run(core_accounts.check_login, self.rt.db, username, password)
        if row is not None:
            if len(self.entries) >= self.MAX_ENTRIES:
                now = time.monotonic()
                self.entries = {k: v for k, v in self.entries.items() if v > now}
                if len(self.entries) >= self.MAX_ENTRIES:
                    self.entries.clear()
            self.entries[self._digest(row["address"], password, row["password_hash"])] = time.monotonic() + self.TTL
        return row


# Runtime -> its Shared (`Shared.of`).
_BY_RUNTIME: "weakref.WeakKeyDictionary[Runtime, Shared]" = weakref.WeakKeyDictionary()


class Shared:
    """Per-daemon IMAP state: session counts, the login cache and the \\Recent high-water marks.

    One per runtime, whichever listener (port 143 or 993) asks first: `Shared.of(rt)`.
    """

    @classmethod
    def of(cls, rt: Runtime) -> "Shared":
        """The IMAP state of a runtime, created on first use."""
        shared = _BY_RUNTIME.get(rt)
        if shared is None:
            shared = _BY_RUNTIME[rt] = cls(rt)
        return shared

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.logins = LoginCache(rt)
        self.sessions: set[Any] = set()  # the open `Session`s
        self.background: set[asyncio.Task] = set()
        self.warmer: Optional[asyncio.Task] = None

    def tls_context(self) -> ssl.SSLContext:
        return self.rt.tls_context  # shared with SMTP, so SIGHUP's certificate reload reaches IMAP too

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Fire-and-forget work (cache writes); kept referenced until done."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background IMAP task failed: %s", task.exception())


def _cache_entries(rt: Runtime, ids: list[str]) -> list[tuple[str, dict[str, bytes]]]:
    """Header and ENVELOPE cache rows for newly delivered messages (in the executor)."""
    entries = []
    roots: dict[tuple[str, str], Any] = {}
    for message_id, filename, folder, local, domain in rt.db.read(mailstate.cache_sources, ids):
        root = roots.get((domain, local))
        if root is None:
            root = roots[(domain, local)] = maildir.mailbox_root(rt.settings.mail_root, domain, local)
        try:
            with open(maildir.folder_dir(root, folder) / filename, "rb") as fh:
                head = fh.read(64 * 1024)
        except OSError:
            continue  # flagged or moved meanwhile: the first FETCH will cache it
        header = head[:structure.header_length(head)]
        entries.append((message_id, {"header": header, "envelope": structure.envelope_bytes(header)}))
    return entries


async def warm_cache(rt: Runtime) -> None:
    """Compute the IMAP cache of delivered mail in the background, so clients find it ready.

    Dovecot caches at delivery the same way; a message that misses this (a
    file dropped into the Maildir, a burst the hub could not queue) is cached
    by its first FETCH instead.
    """
    with rt.hub.subscribe(None, durable_only=True) as queue:
        while True:
            ids: list[str] = []
            event = await queue.get()
            while True:
                payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
                if event.get("type") == "message.received" and isinstance(payload.get("message_id"), str):
                    ids.append(payload["message_id"])
                if queue.empty() or len(ids) >= 500:
                    break
                event = queue.get_nowait()
            if not ids:
                continue
            await asyncio.sleep(0.2)  # let a burst of deliveries gather
            try:
                entries = await rt.run(_cache_entries, rt, ids)
                if entries:
                    await rt.adb.write(mailstate.cache_put, entries)
            except Exception as exc:  # noqa: BLE001 - a cache is only an optimisation
                log.warning("IMAP cache warm-up failed: %s", exc)


__all__ = ["LoginCache", "Shared", "warm_cache"]
