"""The IMAP listeners and sessions (RFC 3501 plus the extensions in `CAPABILITIES`).

One `Session` per connection, on the daemon's event loop. It frames input with
`protocol.CommandReader`, parses with `protocol.parse_command`, runs one
command at a time (pipelined commands queue up in the reader) and writes
responses through a buffer that is flushed at the end of each command or when
it grows large. The selected mailbox and every command that works on it live
in `imap.mailbox`; SEARCH evaluation in `imap.search`.

Port 143 offers STARTTLS and refuses plaintext logins (LOGINDISABLED) until
TLS is active, except from loopback peers which count as secure; port 993 is
TLS from the first byte. Failed logins go through the same per-IP throttle as
SMTP AUTH. Changes made by one session (flags, expunges, appends) are
published on `rt.hub` as non-durable `mailbox.changed` events; deliveries
publish `message.received`. Other sessions of the mailbox pick them up when
RFC 3501 §7.4.1/§5.2 lets them speak: after any command, and at once while
idling (RFC 2177).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Optional

from .. import __version__, mime
from ..address import parse_address
from ..core import accounts as core_accounts
from ..core.deliver import Delivery, deliver
from ..errors import MailError
from ..mime import structure
from ..runtime import Runtime
from ..store import accounts as store_accounts
from ..store import maildir, mailstate
from ..store.messages import get_folder
from ..telemetry.logs import session_id
from ..util import iso, new_id
from . import protocol as p
from .mailbox import ImapError, Selected

log = logging.getLogger(__name__)

# Capabilities (RFC 3501 §7.2.1). AUTH=PLAIN/LOGINDISABLED/STARTTLS are added per state.
CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
                "CHILDREN", "UIDPLUS", "MOVE", "SPECIAL-USE")
SEPARATOR = "/"
MAX_COMMAND_LITERAL = 64 * 1024  # literals of commands other than APPEND
MAX_COMMAND_TOTAL = 1024 * 1024  # all literals of one non-APPEND command
# APPENDed messages up to this size are prepared on the event loop: the parsing holds the
# GIL either way, and a hop to the executor costs more than the work.
INLINE_PREPARE = 256 * 1024
MAX_PREAUTH_LITERAL = 8 * 1024
PREAUTH_TIMEOUT = 120.0
AUTH_TIMEOUT = 30 * 60.0  # RFC 3501 §5.4: at least 30 minutes
IDLE_KEEPALIVE = 120.0
OUTPUT_FLUSH = 256 * 1024
MAX_FOLDER_NAME = 255
_BAD_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f%*.\\]")


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


class Shared:
    """Per-daemon IMAP state: session counts, the login cache and the \\Recent high-water marks."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.logins = LoginCache(rt)
        self.sessions: set["Session"] = set()
        self.per_user: Counter[str] = Counter()
        # (folder id, UIDVALIDITY) -> first UID still \Recent for the next session
        # (RFC 3501 §2.3.2). UIDVALIDITY is part of the key: a recreated folder may get
        # the id of a deleted one.
        self.first_recent: dict[tuple[int, int], int] = {}
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


async def _warm_cache(rt: Runtime) -> None:
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


_WAITS_FOR_CLIENT = frozenset({"IDLE", "AUTHENTICATE", "STARTTLS"})


def _shared(rt: Runtime) -> Shared:
    shared = getattr(rt, "imap_shared", None)
    if shared is None:
        shared = Shared(rt)
        rt.imap_shared = shared  # type: ignore[attr-defined]
    return shared


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_folder_name(name: str) -> Optional[str]:
    """Why `name` cannot be a folder name, or None when it can.

    Names map onto Maildir++ dot folders, so "." is not allowed; "/" is the
    hierarchy separator and may not start, end or double up.
    """
    if not name:
        return "Empty mailbox name"
    if len(name.encode("utf-8")) > MAX_FOLDER_NAME:
        return "Mailbox name too long"
    if _BAD_NAME_CHARS.search(name):
        return "Mailbox names may not contain dots, wildcards, backslashes or control characters"
    if name.startswith(SEPARATOR) or name.endswith(SEPARATOR) or SEPARATOR * 2 in name:
        return "Invalid hierarchy in mailbox name"
    if any(part.strip() != part or not part for part in name.split(SEPARATOR)):
        return "Mailbox name parts may not begin or end with spaces"
    return None


def _list_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8 wildcards: * matches anything, % anything but the separator."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^" + re.escape(SEPARATOR) + "]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _inbox_fold(name: str) -> str:
    """INBOX is case-insensitive, also as the first level of a pattern or name."""
    head, sep, tail = name.partition(SEPARATOR)
    if head.upper() == "INBOX":
        return "INBOX" + sep + tail
    return name


class Session:
    def __init__(self, shared: Shared, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 implicit_tls: bool) -> None:
        self.shared = shared
        self.rt = shared.rt
        self.reader = reader
        self.writer = writer
        self.id = new_id("imap")[5:]
        peer = writer.get_extra_info("peername") or ("0.0.0.0", 0)
        self.peer_ip = str(peer[0])
        self.loopback = _is_loopback(self.peer_ip)
        self.tls = implicit_tls
        self.state = "nonauth"  # nonauth -> auth <-> selected -> logout
        self.mailbox: Optional[dict[str, Any]] = None  # the logged-in mailbox row
        self.selected: Optional[Selected] = None
        self.append_folders: dict[str, dict[str, Any]] = {}  # APPEND targets by name, as last read
        self.commands = p.CommandReader(
            max_literal_size=max(self.rt.settings.message_size_limit, MAX_COMMAND_LITERAL))
        self.out: list[bytes] = []  # pending output chunks, written with one writelines()
        self.out_size = 0
        sock = writer.get_extra_info("socket")
        self.quickack = sock is not None and hasattr(socket, "TCP_QUICKACK") and sock.family != socket.AF_UNIX
        self.sock = sock
        self.closing = False
        self.shutting_down = False
        self.waiting_input = False
        self.hub_queue: Optional[asyncio.Queue] = None
        self._hub_cm: Any = None
        self._root = None
        self.counted_user: Optional[str] = None
        self.task: Optional[asyncio.Task] = None

    # -- output ----------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)

    def untagged(self, text: str | bytes) -> None:
        self.send(b"* " + (text.encode("utf-8") if isinstance(text, str) else text) + b"\r\n")

    async def flush(self) -> None:
        if self.out:
            chunks, self.out, self.out_size = self.out, [], 0
            self.writer.writelines(chunks)
        await self.writer.drain()

    async def maybe_flush(self) -> None:
        if self.out_size >= OUTPUT_FLUSH:
            await self.flush()

    # -- capabilities ----------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self.tls or self.loopback

    def capabilities(self) -> str:
        caps = list(CAPABILITIES)
        if self.state == "nonauth":
            if not self.tls:
                caps.append("STARTTLS")
            caps.append("AUTH=PLAIN" if self.secure else "LOGINDISABLED")
        return " ".join(caps)

    # -- main loop -------------------------------------------------------------

    async def run(self) -> None:
        session_id.set(self.id)
        try:
            self.send(f"* OK [CAPABILITY {self.capabilities()}] openmailserver IMAP ready\r\n".encode())
            await self.flush()
            while not self.closing:
                data = await self.read_input()
                if not data:
                    break
                for event in self.commands.feed(data):
                    await self.handle_event(event)
                    if self.closing:
                        break
                await self.flush()
            if self.shutting_down and self.state != "logout":
                self.send(b"* BYE Server shutting down\r\n")
                await asyncio.wait_for(self.flush(), 2)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self.out, self.out_size = [], 0
                self.send(b"* BYE Server shutting down\r\n")
                await asyncio.wait_for(self.flush(), 2)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:  # noqa: BLE001 - a session bug must not take the daemon down
            log.exception("IMAP session failed")
            with contextlib.suppress(Exception):
                self.out, self.out_size = [], 0
                self.send(b"* BYE Internal server error\r\n")
                await asyncio.wait_for(self.flush(), 2)
        finally:
            await self.cleanup()

    async def read_input(self) -> bytes:
        timeout = PREAUTH_TIMEOUT if self.state == "nonauth" else AUTH_TIMEOUT
        self.waiting_input = True
        try:
            async with asyncio.timeout(timeout):  # cheaper than wait_for: no task per read
                data = await self.reader.read(65536)
            if self.quickack:
                # Acknowledge at once: clients that send a literal and its CRLF in two
                # writes (imaplib does) would otherwise wait for our delayed ACK (Nagle).
                with contextlib.suppress(OSError, ValueError):  # ValueError: the peer already closed
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            return data
        except TimeoutError:
            self.send(b"* BYE Autologout; idle for too long\r\n")
            await self.flush()
            return b""
        finally:
            self.waiting_input = False

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            await self.leave_mailbox()
        if self._hub_cm is not None:
            self._hub_cm.__exit__(None, None, None)
            self._hub_cm = None
        if self.counted_user is not None:
            self.shared.per_user[self.counted_user] -= 1
            if self.shared.per_user[self.counted_user] <= 0:
                del self.shared.per_user[self.counted_user]
            self.counted_user = None
        self.shared.sessions.discard(self)
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)

    # -- events ------------------------------------------------------------------

    async def handle_event(self, event: p.ReaderEvent) -> None:
        if isinstance(event, p.LiteralAnnounced):
            self.decide_literal(event)
            await self.flush()
        elif isinstance(event, p.RawCommand):
            await self.handle_raw(event)
        elif isinstance(event, p.FramingError):
            tag = event.tag or "*"
            if event.code == "TOOBIG":
                self.send(f"{tag} NO [TOOBIG] {event.message}\r\n".encode())
            else:
                self.send(f"{tag} BAD {event.message}\r\n".encode())

    def decide_literal(self, event: p.LiteralAnnounced) -> None:
        name = (event.command or "").upper()
        if self.state == "nonauth":
            if event.size > MAX_PREAUTH_LITERAL or event.total_size + event.size > MAX_PREAUTH_LITERAL * 4:
                self.commands.reject_literal("Literal too large before authentication")
                return
        elif name == "APPEND":
            if event.size > self.rt.settings.message_size_limit:
                self.commands.reject_literal("Message larger than the server accepts", code="TOOBIG")
                return
        elif event.size > MAX_COMMAND_LITERAL or event.total_size + event.size > MAX_COMMAND_TOTAL:
            self.commands.reject_literal("Literal too large")
            return
        self.send(self.commands.accept_literal())

    async def handle_raw(self, raw: p.RawCommand) -> None:
        try:
            command = p.parse_command(raw)
        except p.BadCharsetError as exc:
            self.send(f"{exc.tag or '*'} NO [{exc.code}] {exc.message}\r\n".encode())
            return
        except p.InvalidMailboxName as exc:
            # A well-formed command naming a mailbox that cannot exist.
            if exc.command in ("LIST", "LSUB") and self.state != "nonauth":
                self.send(f"{exc.tag} OK {exc.command.capitalize()} completed\r\n".encode())
            elif self.state == "nonauth":
                self.send(f"{exc.tag} BAD Not authenticated\r\n".encode())
            else:
                self.send(f"{exc.tag} NO [CANNOT] {exc.message}\r\n".encode())
            return
        except p.ParseError as exc:
            name = f" {exc.command}" if exc.command else ""
            self.send(f"{exc.tag or '*'} BAD Error in IMAP command{name}: {exc.message}\r\n".encode())
            return
        await self.dispatch(command)

    async def dispatch(self, cmd: p.Command) -> None:
        entry = _COMMANDS.get(cmd.name)
        assert entry is not None  # the parser only returns known commands
        handler, states = entry
        if self.state not in states:
            if self.state == "nonauth":
                reason = "Not authenticated"
            elif "selected" in states and "auth" not in states:
                reason = "No mailbox selected"
            elif states == ("nonauth",):
                reason = "Already authenticated"
            else:
                reason = "Command not valid in this state"
            self.send(f"{cmd.tag} BAD {reason}\r\n".encode())
            return
        # Flag renames wait while commands run (`store.renames`), but not while one waits for
        # the client, however long that takes.
        if cmd.name in _WAITS_FOR_CLIENT:
            await self._run_handler(handler, cmd)
            return
        self.rt.renames.command_started()
        try:
            await self._run_handler(handler, cmd)
        finally:
            self.rt.renames.command_ended()

    async def _run_handler(self, handler, cmd: p.Command) -> None:
        try:
            status = await handler(self, cmd)
        except ImapError as exc:
            status = exc.response
        except MailError as exc:
            status = f"NO [SERVERBUG] {exc.message}" if exc.http_status >= 500 else f"NO {exc.message}"
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:  # noqa: BLE001 - one failing command must not end the session
            log.exception("IMAP command %s failed", cmd.full_name)
            status = "NO [SERVERBUG] Internal error; the command was not completed"
        if status is None:
            return  # the handler answered (LOGOUT)
        if self.selected is not None and cmd.name not in ("SELECT", "EXAMINE"):
            await self.after_command(cmd)
        self.send(f"{cmd.tag} {status}\r\n".encode())
        await self.maybe_flush()

    async def after_command(self, cmd: p.Command) -> None:
        """Report what other sessions changed, when RFC 3501 §7.4.1 allows it."""
        assert self.selected is not None
        self.drain_hub()
        force = cmd.name in ("NOOP", "CHECK", "EXPUNGE", "CLOSE", "IDLE", "MOVE", "COPY", "APPEND")
        if not (force or self.selected.dirty):
            return
        no_expunge = cmd.name in ("FETCH", "STORE", "SEARCH") and not cmd.uid
        await self.selected.sync(self, allow_expunge=not no_expunge)

    def drain_hub(self) -> bool:
        """Mark the selected mailbox dirty for every relevant event; True if any."""
        queue = self.hub_queue
        if queue is None:
            return False
        relevant = queue.full()
        while not queue.empty():
            event = queue.get_nowait()
            if self.selected is not None and self.selected.concerns(event, self):
                relevant = True
        if relevant and self.selected is not None:
            self.selected.dirty = True
        return relevant

    def publish(self, folder: dict[str, Any]) -> None:
        assert self.mailbox is not None
        self.rt.hub.publish({"type": "mailbox.changed", "mailbox_id": self.mailbox["id"],
                             "folder_id": folder["id"], "folder": folder["name"], "origin": self.id,
                             "durable": False})

    # -- paths -------------------------------------------------------------------

    def mailbox_root(self):
        assert self.mailbox is not None
        if self._root is None:  # resolving the path costs system calls: once per session
            self._root = maildir.mailbox_root(self.rt.settings.mail_root, self.mailbox["domain"],
                                              self.mailbox["local_part"])
        return self._root

    def folder_path(self, name: str):
        return maildir.folder_dir(self.mailbox_root(), name)

    # -- any state -----------------------------------------------------------------

    async def cmd_capability(self, cmd: p.Command) -> str:
        self.untagged(f"CAPABILITY {self.capabilities()}")
        return "OK Capability completed"

    async def cmd_noop(self, cmd: p.Command) -> str:
        return "OK NOOP completed"

    async def cmd_logout(self, cmd: p.Command) -> None:
        await self.leave_mailbox()
        self.send(b"* BYE Logging out\r\n")
        self.send(f"{cmd.tag} OK Logout completed\r\n".encode())
        self.closing = True
        self.state = "logout"
        return None

    async def cmd_id(self, cmd: p.Command) -> str:
        # RFC 2971: the client's fields are only informational.
        self.untagged(f'ID ("name" "openmailserver" "version" "{__version__}")')
        return "OK ID completed"

    # -- not authenticated -------------------------------------------------------------

    async def cmd_starttls(self, cmd: p.Command) -> str | None:
        if self.tls:
            return "BAD TLS is already active"
        # RFC 3501 §6.2.1: nothing the client pipelined in plaintext is executed, and
        # no byte of the TLS handshake may end up in the plaintext buffers.
        transport = self.writer.transport
        transport.pause_reading()
        buffered = getattr(self.reader, "_buffer", None)
        if buffered is not None:
            buffered.clear()
        self.commands.reset()
        self.send(f"{cmd.tag} OK Begin TLS negotiation now\r\n".encode())
        await self.flush()
        await self.writer.start_tls(self.shared.tls_context())
        self.tls = True
        return None

    async def cmd_login(self, cmd: p.Command) -> str:
        args: p.LoginArgs = cmd.args  # type: ignore[assignment]
        if not self.secure:
            return "NO [PRIVACYREQUIRED] Use STARTTLS before logging in"
        return await self.authenticate(args.username, args.password)

    async def cmd_authenticate(self, cmd: p.Command) -> str:
        args: p.AuthenticateArgs = cmd.args  # type: ignore[assignment]
        if args.mechanism != "PLAIN":
            return "NO [CANNOT] Unsupported authentication mechanism"
        if not self.secure:
            return "NO [PRIVACYREQUIRED] Use STARTTLS before authenticating"
        response = args.initial_response
        if response is None:
            self.send(b"+ \r\n")
            await self.flush()
            line = await self.read_line()
            if line is None:
                self.closing = True
                return "BAD Connection closed"
            response = line.strip().decode("ascii", "replace")
            if response == "*":
                return "BAD Authentication cancelled"
        try:
            decoded = base64.b64decode(response, validate=True) if response != "=" else b""
        except (binascii.Error, ValueError):
            return "BAD Invalid base64 data"
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            return "BAD Invalid PLAIN response"
        authzid, authcid, password = (x.decode("utf-8", "replace") for x in parts)
        if authzid and authzid.lower() != authcid.lower():
            return "NO [AUTHORIZATIONFAILED] Cannot act as another user"
        return await self.authenticate(authcid, password)

    async def read_line(self) -> Optional[bytes]:
        """The next raw client line (SASL continuation); None on disconnect."""
        self.commands.expect_line()
        while True:
            for event in self.commands.events():
                if isinstance(event, p.ContinuationLine):
                    return event.data
                if isinstance(event, p.FramingError):
                    return b"*"
            data = await self.read_input()
            if not data:
                return None
            self.commands.feed(data)

    async def authenticate(self, username: str, password: str) -> str:
        throttle = self.rt.auth_throttle
        if throttle.blocked(self.peer_ip):
            return "NO [UNAVAILABLE] Too many failed logins; try again later"
        row = await self.shared.logins.check(username, password)
        if row is None:
            throttle.failure(self.peer_ip)
            log.info("IMAP login failed for %r from %s", username[:100], self.peer_ip)
            await asyncio.sleep(0.3)
            return "NO [AUTHENTICATIONFAILED] Authentication failed"
        throttle.success(self.peer_ip)
        mailbox = await self.rt.adb.read(store_accounts.get_mailbox_by_id, row["id"])
        if mailbox is None:
            return "NO [AUTHENTICATIONFAILED] Authentication failed"
        if self.shared.per_user[mailbox["id"]] >= self.rt.settings.imap_max_sessions_per_user:
            return "NO [LIMIT] Too many sessions for this user"
        self.shared.per_user[mailbox["id"]] += 1
        self.counted_user = mailbox["id"]
        self.mailbox = mailbox
        self.state = "auth"
        self._hub_cm = self.rt.hub.subscribe(mailbox["id"])
        self.hub_queue = self._hub_cm.__enter__()
        log.info("IMAP login %s from %s", mailbox["address"], self.peer_ip)
        return f"OK [CAPABILITY {self.capabilities()}] Logged in"

    # -- authenticated -------------------------------------------------------------------

    async def cmd_enable(self, cmd: p.Command) -> str:
        # RFC 5161: none of our extensions needs enabling; report what was enabled: nothing.
        self.untagged("ENABLED")
        return "OK Enabled"

    async def cmd_namespace(self, cmd: p.Command) -> str:
        self.untagged(f'NAMESPACE (("" "{SEPARATOR}")) NIL NIL')
        return "OK Namespace completed"

    async def leave_mailbox(self) -> None:
        if self.selected is not None:
            selected, self.selected = self.selected, None
            await selected.close(self)
        if self.state == "selected":
            self.state = "auth"

    async def cmd_select(self, cmd: p.Command) -> str:
        args: p.SelectArgs = cmd.args  # type: ignore[assignment]
        await self.leave_mailbox()  # RFC 3501 §6.3.1: a failed SELECT leaves none selected
        if args.parameters:
            return "BAD SELECT parameters are not supported"
        assert self.mailbox is not None
        name = args.mailbox
        folder = await self.rt.adb.read(get_folder, self.mailbox["id"], name) if not check_folder_name(name) \
            or name == "INBOX" else None
        if folder is None:
            return "NO [NONEXISTENT] Mailbox does not exist"
        readonly = cmd.name == "EXAMINE"
        selected = await Selected.open(self, folder, readonly)
        if selected is None:
            return "NO [NONEXISTENT] Mailbox does not exist"
        self.selected = selected
        self.state = "selected"
        self.drain_hub()
        selected.dirty = False
        selected.greet(self)
        return "OK [READ-ONLY] Examine completed" if readonly else "OK [READ-WRITE] Select completed"

    async def cmd_create(self, cmd: p.Command) -> str:
        args: p.CreateArgs = cmd.args  # type: ignore[assignment]
        assert self.mailbox is not None
        if args.parameters:
            return "BAD CREATE parameters are not supported"
        name = _inbox_fold(args.mailbox)
        if name.endswith(SEPARATOR):  # RFC 3501 §6.3.3: a trailing separator only states intent
            name = name.rstrip(SEPARATOR)
        if name == "INBOX":
            return "NO [ALREADYEXISTS] INBOX always exists"
        problem = check_folder_name(name)
        if problem:
            return f"NO [CANNOT] {problem}"
        existing = await self.rt.adb.read(get_folder, self.mailbox["id"], name)
        if existing is not None:
            return "NO [ALREADYEXISTS] Mailbox already exists"
        parts = name.split(SEPARATOR)
        names = [SEPARATOR.join(parts[:i]) for i in range(1, len(parts) + 1)]
        names = [_inbox_fold(n) for n in names if _inbox_fold(n) != "INBOX"]
        root = self.mailbox_root()
        await self.rt.run(lambda: [maildir.ensure_folder(root, n) for n in names])
        created = await self.rt.adb.write(mailstate.create_folders, self.mailbox["id"], names)
        if not any(r["name"] == name for r in created):
            return "NO [ALREADYEXISTS] Mailbox already exists"
        return "OK Create completed"

    async def cmd_delete(self, cmd: p.Command) -> str:
        args: p.MailboxArgs = cmd.args  # type: ignore[assignment]
        assert self.mailbox is not None
        name = args.mailbox
        if name == "INBOX":
            return "NO [CANNOT] INBOX cannot be deleted"
        if name in maildir.DEFAULT_FOLDERS:
            return f"NO [CANNOT] {name} is a system folder and cannot be deleted"
        root = self.mailbox_root()
        trash = root / "tmp" / mailstate.trash_name()
        if self.selected is not None and self.selected.folder["name"] == name:
            await self.leave_mailbox()
        folder = await self.rt.adb.write(mailstate.delete_folder, self.mailbox["id"], name,
                                         maildir.folder_dir(root, name), trash)
        if folder is None:
            return "NO [NONEXISTENT] Mailbox does not exist"
        await self.rt.run(_remove_tree, trash)
        self.publish(folder)
        return "OK Delete completed"

    async def cmd_rename(self, cmd: p.Command) -> str:
        args: p.RenameArgs = cmd.args  # type: ignore[assignment]
        assert self.mailbox is not None
        old, new = args.source, _inbox_fold(args.destination).rstrip(SEPARATOR)
        if new == "INBOX":
            return "NO [ALREADYEXISTS] INBOX always exists"
        problem = check_folder_name(new)
        if problem:
            return f"NO [CANNOT] {problem}"
        if old != "INBOX" and old in maildir.DEFAULT_FOLDERS:
            return f"NO [CANNOT] {old} is a system folder and cannot be renamed"
        if new == old or new.startswith(old + SEPARATOR):
            return "NO [CANNOT] Cannot rename a mailbox into itself"
        mailbox_id = self.mailbox["id"]
        source = await self.rt.adb.read(get_folder, mailbox_id, old)
        if source is None:
            return "NO [NONEXISTENT] Mailbox does not exist"
        if await self.rt.adb.read(get_folder, mailbox_id, new) is not None:
            return "NO [ALREADYEXISTS] Target mailbox already exists"
        root = self.mailbox_root()
        parts = new.split(SEPARATOR)
        parents = [_inbox_fold(SEPARATOR.join(parts[:i])) for i in range(1, len(parts))]
        parents = [n for n in parents if n != "INBOX"]
        if parents:
            await self.rt.run(lambda: [maildir.ensure_folder(root, n) for n in parents])
            await self.rt.adb.write(mailstate.create_folders, mailbox_id, parents)
        if old == "INBOX":
            return await self.rename_inbox(new)
        await self.rt.adb.write(mailstate.rename_folder, mailbox_id, old, new, root)
        selected = self.selected
        if selected is not None and (selected.folder["name"] == old
                                     or selected.folder["name"].startswith(old + SEPARATOR)):
            # The selected folder moved with the rename; it stays selected under its new name.
            renamed = new + selected.folder["name"][len(old):]
            selected.folder = {**selected.folder, "name": renamed}
            selected.path = self.folder_path(renamed)
        self.publish(source)
        return "OK Rename completed"

    async def rename_inbox(self, new: str) -> str:
        """RFC 3501 §6.3.5: renaming INBOX moves its messages to a new folder; INBOX stays."""
        assert self.mailbox is not None
        root = self.mailbox_root()
        await self.rt.run(maildir.ensure_folder, root, new)
        await self.rt.adb.write(mailstate.create_folders, self.mailbox["id"], [new])
        inbox = await self.rt.adb.read(get_folder, self.mailbox["id"], "INBOX")
        target = await self.rt.adb.read(get_folder, self.mailbox["id"], new)
        uids = await self.rt.adb.read(mailstate.folder_uids, inbox["id"])
        if uids:
            await self.rt.adb.write(mailstate.move_messages, inbox["id"], maildir.folder_dir(root, "INBOX"),
                                    target["id"], maildir.folder_dir(root, new), uids)
        self.publish(inbox)
        return "OK Rename completed"

    async def cmd_subscribe(self, cmd: p.Command) -> str:
        args: p.MailboxArgs = cmd.args  # type: ignore[assignment]
        assert self.mailbox is not None
        await self.rt.adb.write(mailstate.set_subscribed, self.mailbox["id"], args.mailbox,
                                cmd.name == "SUBSCRIBE")
        return f"OK {cmd.name.capitalize()} completed"

    async def folder_tree(self) -> tuple[dict[str, dict], set[str]]:
        """Existing folders by name, and every name that has children (incl. virtual parents)."""
        assert self.mailbox is not None
        rows = await self.rt.adb.read(mailstate.folder_names, self.mailbox["id"])
        folders = {r["name"]: r for r in rows}
        parents: set[str] = set()
        for name in folders:
            parts = name.split(SEPARATOR)
            for i in range(1, len(parts)):
                parents.add(SEPARATOR.join(parts[:i]))
        return folders, parents

    async def cmd_list(self, cmd: p.Command) -> str:
        args: p.ListArgs = cmd.args  # type: ignore[assignment]
        if cmd.name == "LSUB":
            return await self.lsub(args)
        selection = {str(v).upper() for v in args.selection_options if isinstance(v, str)}
        returns = {str(v).upper() for v in args.return_options if isinstance(v, str)}
        if selection - {"SUBSCRIBED", "SPECIAL-USE", "REMOTE", "RECURSIVEMATCH"} or \
                returns - {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"}:
            return "BAD Unsupported LIST option"
        if len(args.patterns) == 1 and args.patterns[0] == "" and not selection:
            # RFC 3501 §6.3.8: the hierarchy delimiter and root name.
            self.untagged(f'LIST (\\Noselect) "{SEPARATOR}" ""')
            return "OK List completed"
        folders, parents = await self.folder_tree()
        subscribed: set[str] = set()
        if "SUBSCRIBED" in selection or "SUBSCRIBED" in returns:
            assert self.mailbox is not None
            subscribed = set(await self.rt.adb.read(mailstate.subscribed_names, self.mailbox["id"]))
        candidates = set(folders) | parents
        if "SUBSCRIBED" in selection:
            candidates = (candidates & subscribed) | {n for n in subscribed}
        matched: list[str] = []
        for pattern in args.patterns:
            full = _inbox_fold(args.reference + pattern if args.reference else pattern)
            regex = _list_regex(full)
            matched.extend(n for n in candidates if regex.fullmatch(n) and n not in matched)
        for name in sorted(matched, key=lambda n: (n != "INBOX", n)):
            row = folders.get(name)
            if "SPECIAL-USE" in selection and not (row and row["special_use"]):
                continue
            attrs = []
            if row is None:
                attrs.append("\\NonExistent" if name not in parents else "\\Noselect")
            attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
            if row is not None and row["special_use"]:
                attrs.append(row["special_use"])
            if "SUBSCRIBED" in returns or "SUBSCRIBED" in selection:
                if name in subscribed:
                    attrs.append("\\Subscribed")
            self.untagged(b"LIST (" + " ".join(attrs).encode() + b') "' + SEPARATOR.encode() + b'" '
                          + p.encode_mailbox(name))
        return "OK List completed"

    async def lsub(self, args: p.ListArgs) -> str:
        assert self.mailbox is not None
        subscribed = await self.rt.adb.read(mailstate.subscribed_names, self.mailbox["id"])
        folders, _ = await self.folder_tree()
        pattern = _inbox_fold(args.reference + args.pattern if args.reference else args.pattern)
        regex = _list_regex(pattern)
        out: dict[str, str] = {}
        for name in subscribed:
            if regex.fullmatch(name):
                out[name] = "" if name in folders else "\\Noselect"
            elif pattern.endswith("%"):
                # RFC 3501 §6.3.9: a parent matched by a trailing % is listed \Noselect
                # when only names below it are subscribed.
                parts = name.split(SEPARATOR)
                for i in range(1, len(parts)):
                    parent = SEPARATOR.join(parts[:i])
                    if regex.fullmatch(parent) and parent not in out:
                        out[parent] = "\\Noselect"
        for name in sorted(out):
            if name in subscribed and out[name] == "\\Noselect" and name in folders:
                out[name] = ""
            self.untagged(b"LSUB (" + out[name].encode() + b') "' + SEPARATOR.encode() + b'" '
                          + p.encode_mailbox(name))
        return "OK Lsub completed"

    async def cmd_status(self, cmd: p.Command) -> str:
        args: p.StatusArgs = cmd.args  # type: ignore[assignment]
        assert self.mailbox is not None
        folder = await self.rt.adb.read(get_folder, self.mailbox["id"], args.mailbox)
        if folder is None:
            return "NO [NONEXISTENT] Mailbox does not exist"
        first = self.shared.first_recent.get((folder["id"], folder["uidvalidity"]), folder["first_recent_uid"])
        status = await self.rt.adb.read(mailstate.folder_status, folder["id"], first)
        status["appendlimit"] = self.rt.settings.message_size_limit
        items = " ".join(f"{item} {status[item.lower()]}" for item in args.items)
        self.untagged(b"STATUS " + p.encode_mailbox(args.mailbox) + b" (" + items.encode() + b")")
        return "OK Status completed"

    async def cmd_append(self, cmd: p.Command) -> str:
        args: p.AppendArgs = cmd.args  # type: ignore[assignment]
        assert self.mailbox is not None
        if not args.message:
            return "NO Empty messages are not accepted"
        if len(args.message) <= INLINE_PREPARE:
            prepared = _prepare_append(args.message)
        else:
            prepared = await self.rt.run(_prepare_append, args.message)
        # A folder row this session already read is used as it is: the delivery transaction
        # checks that the name still leads to that folder. If anything fails with the row
        # from before, the folder is read again and the APPEND tried once more.
        has_keywords = any(not f.startswith("\\") for f in args.flags)
        folder = None if has_keywords else self.append_folders.get(args.mailbox)
        while True:
            fresh = folder is None
            if fresh:
                folder = await self.rt.adb.read(get_folder, self.mailbox["id"], args.mailbox)
                if folder is None:
                    return "NO [TRYCREATE] Mailbox does not exist"
                if len(self.append_folders) >= 64:
                    self.append_folders.clear()
                self.append_folders[args.mailbox] = folder
            try:
                return await self.append_to(folder, args, prepared)
            except MailError as exc:
                if not _folder_gone(exc):
                    raise
                self.append_folders.pop(args.mailbox, None)
                if fresh:  # gone again between the read and the transaction
                    return "NO [TRYCREATE] Mailbox does not exist"
                folder = None

    async def append_to(self, folder: dict[str, Any], args: p.AppendArgs,
                        prepared: tuple[bytes, dict[str, Any]]) -> str:
        assert self.mailbox is not None
        data, meta = prepared
        # Keywords are case-insensitive: keep the spelling the folder already uses (the row
        # was read for this APPEND when it names keywords).
        known = {k.lower(): k for k in mailstate.split_flags(folder.get("keywords", ""))}
        flags = {f if f.startswith("\\") else known.get(f.lower(), f) for f in args.flags}
        keywords = [f for f in flags if not f.startswith("\\")]
        delivery = Delivery(mailbox=self.mailbox, data=data, meta=meta, folder=folder["name"], flags=flags,
                            direction="outbound" if folder["special_use"] in ("\\Sent", "\\Drafts") else "inbound",
                            event_type=None,
                            internal_date=iso(args.internal_date) if args.internal_date else None)
        selected = self.selected if self.selected is not None and self.selected.folder["id"] == folder["id"] \
            else None
        since = selected.known_modseq if selected is not None else None
        changes: list[dict] = []

        def finish(conn, rows: list[dict]) -> None:
            if rows[0]["folder_id"] != folder["id"]:
                raise _StaleFolder()
            if rows[0]["over_quota"]:  # counting this message
                raise _OverQuota()
            if keywords:
                mailstate.add_keywords(conn, folder["id"], keywords)
            if since is not None:  # what the selected view must learn, read in the same transaction
                # (assigned, not appended: the writer may run this again after undoing a merged group)
                changes[:] = [mailstate.changes_since(conn, folder["id"], since)]

        try:
            rows = await deliver(self.rt, [delivery], finish)
        except _OverQuota:
            return "NO [OVERQUOTA] Quota exceeded"
        self.publish(folder)
        if selected is not None and selected is self.selected:
            selected.prefetched = changes[0]
        return f"OK [APPENDUID {rows[0]['uidvalidity']} {rows[0]['uid']}] Append completed"

    async def cmd_idle(self, cmd: p.Command) -> str:
        """RFC 2177: report changes as they happen until the client says DONE."""
        self.send(b"+ idling\r\n")
        if self.selected is not None:
            await self.selected.sync(self, allow_expunge=True)
        await self.flush()
        self.commands.expect_done()
        read_task: Optional[asyncio.Task] = None
        hub_task: Optional[asyncio.Task] = None
        last_output = time.monotonic()
        try:
            while True:
                for event in self.commands.events():
                    if isinstance(event, p.IdleDone):
                        return "OK Idle completed" if event.valid else "BAD Expected DONE"
                    if isinstance(event, p.FramingError):
                        return "BAD Expected DONE"
                if read_task is None:
                    read_task = asyncio.ensure_future(self.reader.read(65536))
                if hub_task is None and self.hub_queue is not None:
                    hub_task = asyncio.ensure_future(self.hub_queue.get())
                waiting = {t for t in (read_task, hub_task) if t is not None}
                self.waiting_input = True
                done, _ = await asyncio.wait(waiting, timeout=IDLE_KEEPALIVE,
                                             return_when=asyncio.FIRST_COMPLETED)
                self.waiting_input = False
                if read_task in done:
                    data = read_task.result()
                    read_task = None
                    if not data:
                        self.closing = True
                        return "BAD Connection closed"
                    self.commands.feed(data)
                if hub_task is not None and hub_task in done:
                    event = hub_task.result()
                    hub_task = None
                    if self.selected is not None and (self.selected.concerns(event, self) or self.drain_hub()):
                        await self.selected.sync(self, allow_expunge=True)
                if not done and time.monotonic() - last_output >= IDLE_KEEPALIVE:
                    if self.selected is not None:
                        await self.selected.sync(self, allow_expunge=True)
                    if not self.out:
                        self.untagged("OK Still here")
                if self.out:
                    last_output = time.monotonic()
                    await self.flush()
        finally:
            for task in (read_task, hub_task):
                if task is not None and not task.done():
                    task.cancel()
            if read_task is not None and read_task.done() and not read_task.cancelled():
                # Bytes read after DONE belong to the next commands.
                if read_task.exception() is None and read_task.result():
                    self.commands.feed(read_task.result())

    # -- selected state (delegated) ------------------------------------------------------

    async def cmd_selected(self, cmd: p.Command) -> str:
        assert self.selected is not None
        return await self.selected.command(self, cmd)

    async def cmd_close(self, cmd: p.Command) -> str:
        assert self.selected is not None
        selected = self.selected
        if cmd.name == "CLOSE" and not selected.readonly:
            await selected.expunge(self, silent=True)
        await self.leave_mailbox()
        return f"OK {cmd.name.capitalize()} completed"


def _remove_tree(path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


_BARE_LF = re.compile(rb"(?<!\r)\n")


class _StaleFolder(MailError):
    """The folder row an APPEND used no longer matches its name (renamed, deleted or re-created)."""

    def __init__(self) -> None:
        super().__init__("folder_changed", "The mailbox changed meanwhile", http_status=409, smtp=(451, "4.3.0"))


def _folder_gone(exc: MailError) -> bool:
    """Whether an APPEND failed because its folder was renamed, deleted or re-created meanwhile:
    the transaction found another folder or none by that name, or its directory was gone."""
    return isinstance(exc, _StaleFolder) or isinstance(exc.__cause__, (LookupError, FileNotFoundError))


class _OverQuota(MailError):
    def __init__(self) -> None:
        super().__init__("over_quota", "Quota exceeded", http_status=507, smtp=(452, "4.2.2"))


def _prepare_append(message: bytes) -> tuple[bytes, dict[str, Any]]:
    """CRLF line ends and the index metadata of an APPENDed message.

    Its IMAP cache (header block, ENVELOPE) is left to its first FETCH: an APPEND
    answers sooner without it, and clients often never fetch what they appended.
    """
    data = _BARE_LF.sub(b"\r\n", message) if message.count(b"\n") != message.count(b"\r\n") else message
    return data, mime.index_meta(data)


Handler = Callable[[Session, p.Command], Awaitable[Optional[str]]]
_ANY = ("nonauth", "auth", "selected")
_AUTHED = ("auth", "selected")
_SEL = ("selected",)
_COMMANDS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "CAPABILITY": (Session.cmd_capability, _ANY),
    "NOOP": (Session.cmd_noop, _ANY),
    "LOGOUT": (Session.cmd_logout, _ANY),
    "ID": (Session.cmd_id, _ANY),
    "STARTTLS": (Session.cmd_starttls, ("nonauth",)),
    "LOGIN": (Session.cmd_login, ("nonauth",)),
    "AUTHENTICATE": (Session.cmd_authenticate, ("nonauth",)),
    "ENABLE": (Session.cmd_enable, _AUTHED),
    "NAMESPACE": (Session.cmd_namespace, _AUTHED),
    "SELECT": (Session.cmd_select, _AUTHED),
    "EXAMINE": (Session.cmd_select, _AUTHED),
    "CREATE": (Session.cmd_create, _AUTHED),
    "DELETE": (Session.cmd_delete, _AUTHED),
    "RENAME": (Session.cmd_rename, _AUTHED),
    "SUBSCRIBE": (Session.cmd_subscribe, _AUTHED),
    "UNSUBSCRIBE": (Session.cmd_subscribe, _AUTHED),
    "LIST": (Session.cmd_list, _AUTHED),
    "LSUB": (Session.cmd_list, _AUTHED),
    "STATUS": (Session.cmd_status, _AUTHED),
    "APPEND": (Session.cmd_append, _AUTHED),
    "IDLE": (Session.cmd_idle, _AUTHED),
    "CHECK": (Session.cmd_selected, _SEL),
    "EXPUNGE": (Session.cmd_selected, _SEL),
    "SEARCH": (Session.cmd_selected, _SEL),
    "FETCH": (Session.cmd_selected, _SEL),
    "STORE": (Session.cmd_selected, _SEL),
    "COPY": (Session.cmd_selected, _SEL),
    "MOVE": (Session.cmd_selected, _SEL),
    "CLOSE": (Session.cmd_close, _SEL),
    "UNSELECT": (Session.cmd_close, _SEL),
}


# -- listeners -------------------------------------------------------------------------


async def _start(rt: Runtime, sock: socket.socket, implicit_tls: bool) -> Callable[[], Awaitable[None]]:
    shared = _shared(rt)
    context = shared.tls_context()
    mine: set[Session] = set()
    if shared.warmer is None:
        shared.warmer = asyncio.create_task(_warm_cache(rt))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(shared.sessions) >= rt.settings.imap_max_connections:
            writer.write(b"* BYE Too many connections, try again later\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
            return
        session = Session(shared, reader, writer, implicit_tls)
        session.task = asyncio.current_task()
        shared.sessions.add(session)
        mine.add(session)
        try:
            await session.run()
        finally:
            mine.discard(session)

    server = await asyncio.start_server(handle, sock=sock, ssl=context if implicit_tls else None,
                                        limit=256 * 1024)

    async def stop() -> None:
        server.close()
        if shared.warmer is not None:
            shared.warmer.cancel()
        for session in list(mine):
            session.closing = session.shutting_down = True
            if session.waiting_input and session.task is not None:
                session.task.cancel()
        pending = [s.task for s in mine if s.task is not None and not s.task.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=5)
            for task in still:
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
        if shared.background:
            await asyncio.wait(list(shared.background), timeout=3)

    return stop


async def start_imap(rt: Runtime, sock: socket.socket) -> Callable[[], Awaitable[None]]:
    """Port 143: plaintext with STARTTLS (RFC 3501 §6.2.1)."""
    return await _start(rt, sock, implicit_tls=False)


async def start_imaps(rt: Runtime, sock: socket.socket) -> Callable[[], Awaitable[None]]:
    """Port 993: TLS from the first byte (RFC 8314)."""
    return await _start(rt, sock, implicit_tls=True)


__all__ = ["start_imap", "start_imaps", "Session", "check_folder_name"]
