"""One IMAP session (RFC 3501): reading input, dispatching commands, tagged replies and buffered output.

One `Session` per connection, on the daemon's event loop. It frames input with
`protocol.CommandReader`, parses with `protocol.parse_command`, runs one
command at a time (pipelined commands queue up in the reader) and writes
responses through a buffer that is flushed at the end of each command or when
it grows large. The command table (`imap.handlers`) says which function runs
each command and in which states; the session checks the state, runs the
handler and sends its tagged status. After a command it reports what other
sessions changed in the selected folder, when RFC 3501 §7.4.1 lets it (events
arrive through `rt.hub`).

Changes this session makes (flags, expunges, appends) are published on
`rt.hub` as non-durable `mailbox.changed` events (`publish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from typing import Any, Awaitable, Callable, Optional

from .. import __version__
from ..store import maildir
from ..telemetry.logs import session_id
from ..util import new_id
from . import protocol as p
from .errors import command_status
from .selected import Selected
from .shared import Shared

log = logging.getLogger(__name__)

# Capabilities (RFC 3501 §7.2.1). AUTH=PLAIN/LOGINDISABLED/STARTTLS are added per state.
CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
                "CHILDREN", "UIDPLUS", "MOVE", "SPECIAL-USE")
MAX_COMMAND_LITERAL = 64 * 1024  # literals of commands other than APPEND
MAX_COMMAND_TOTAL = 1024 * 1024  # all literals of one non-APPEND command
MAX_PREAUTH_LITERAL = 8 * 1024
PREAUTH_TIMEOUT = 120.0
AUTH_TIMEOUT = 30 * 60.0  # RFC 3501 §5.4: at least 30 minutes
OUTPUT_FLUSH = 256 * 1024

_WAITS_FOR_CLIENT = frozenset({"IDLE", "AUTHENTICATE", "STARTTLS"})

#: A command handler: it returns the tagged status text, or None when it answered itself (LOGOUT).
Handler = Callable[["Session", p.Command], Awaitable[Optional[str]]]
#: The command table: command name -> (handler, the states it is valid in).
Handlers = dict[str, tuple[Handler, tuple[str, ...]]]


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Session:
    """One IMAP connection: its input, its state, its command dispatch and its buffered output.

    It provides `context.Context` to the selected state (see the end of `__init__`).
    """

    def __init__(self, shared: Shared, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 implicit_tls: bool, handlers: Handlers) -> None:
        self.shared = shared
        self.rt = shared.rt
        self.handlers = handlers  # command name -> (handler, states it is valid in)
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
        self.hub_subscription: Any = None  # the context manager of `hub_queue`
        self._root = None
        self.counted_user: Optional[str] = None
        self.task: Optional[asyncio.Task] = None
        # `context.Context`: besides id, mailbox, out_size and the methods send, untagged, flush,
        # publish and folder_path, the runtime services and shared state the selected state uses,
        # as plain attributes (FETCH loops read them).
        self.db = self.rt.db
        self.adb = self.rt.adb
        self.run_blocking = self.rt.run
        self.renames = self.rt.renames
        self.spawn = shared.spawn

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

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            await self.leave_mailbox()
        if self.hub_subscription is not None:
            self.hub_subscription.__exit__(None, None, None)
            self.hub_subscription = None
        if self.counted_user is not None:
            self.rt.board.add(self.counted_user, -1)
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
        entry = self.handlers.get(cmd.name)
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
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - one failing command must not end the session
            status = command_status(exc, cmd)  # `imap.errors`: how a failure becomes the tagged reply
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

    # -- CAPABILITY, NOOP, LOGOUT, ID, ENABLE (the other commands: see `imap.handlers`) ------

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
        # "worker": which worker process of the daemon serves this connection.
        self.untagged(f'ID ("name" "openmailserver" "version" "{__version__}" "worker" "{self.rt.worker}")')
        return "OK ID completed"

    async def cmd_enable(self, cmd: p.Command) -> str:
        # RFC 5161: none of our extensions needs enabling; report what was enabled: nothing.
        self.untagged("ENABLED")
        return "OK Enabled"

    # -- the selected state ----------------------------------------------------------

    async def leave_mailbox(self) -> None:
        """Forget the selected folder, if any, and go back to the authenticated state."""
        self.selected = None
        if self.state == "selected":
            self.state = "auth"


__all__ = ["Session", "Handler", "Handlers", "CAPABILITIES"]
