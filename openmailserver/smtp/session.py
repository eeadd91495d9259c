"""Our SMTP server (RFC 5321): one asyncio protocol object per connection.

The protocol is ours rather than a library's because a connection must cost
little: opening one is a few attribute assignments, replies to pipelined
commands leave in one write (RFC 2920), and only commands that wait for the
database or the disk (MAIL and RCPT on some ports, the end of DATA, AUTH) run
as tasks. What a port does with the envelope — the MX receiver, authenticated
submission — is its `Handler`.

Every reply carries an RFC 3463 enhanced status code (RFC 2034 §3) except the
greeting and the EHLO/HELO replies. Input is strict, as a public MX needs:

* a command line that does not end in CRLF or holds a NUL byte gets a 500
  (bare LF is how SMTP smuggling starts, RFC 5321 §2.3.8); message data with a
  bare LF or a NUL is refused with 554 after its end (`data_problem`);
* command lines over `MAX_LINE` octets get a 500 (RFC 5321 §4.5.3.1.4);
* message data over the size limit gets `552 5.3.4` after its end, without
  being kept in memory;
* too many connections in all or from one IP get `421 4.7.0` and are closed;
* an idle session gets `421 4.4.2` before it is closed.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import inspect
import logging
import ssl
from typing import Any, Awaitable, Callable, Optional, Union

from ..errors import MailError, storage_exhausted

log = logging.getLogger(__name__)

# RFC 5321 §4.5.3.1.4 allows 512 octets for a command line; extensions' parameters
# may raise that, so lines up to 1000 octets (the text line limit) are read.
MAX_LINE = 1000
# Input buffered while a command is being worked on (pipelining); reading pauses above it.
MAX_PIPELINED = 256 * 1024
_BODY_TYPES = {"7BIT", "8BITMIME"}

Reply = Union[str, Awaitable[str]]


def data_problem(raw: bytes) -> Optional[str]:
    """The 554 reply for message data we never accept, else None."""
    if b"\0" in raw:
        return "554 5.6.0 NUL characters are not allowed in message data"
    if raw.count(b"\n") != raw.count(b"\r\n"):  # some line feed lacks its carriage return
        return "554 5.6.0 Bare LF is not allowed in message data (RFC 5321 section 2.3.8)"
    return None


class Limits:
    """The connection limits of one listener, counted over every worker of the daemon on its
    shared board (`interprocess.board.Board`); `blocked(ip)` refuses an address outright
    (submission: one that guessed passwords too often)."""

    def __init__(self, board, listener: str, total: int, per_ip: int,
                 blocked: Callable[[str], float] | None = None) -> None:
        self.board, self.listener = board, listener
        self.total_limit, self.per_ip_limit = total, per_ip
        self.blocked = blocked

    @property
    def total(self) -> int:
        return self.board.sessions(self.listener)

    def admit(self, ip: str) -> str | None:
        if self.blocked is not None and self.blocked(ip):
            return "too many failed logins from your address, try again later"
        if self.board.sessions(self.listener) >= self.total_limit:
            return "too many connections, try again later"
        key = f"{self.listener} {ip}"
        if self.board.count(key) >= self.per_ip_limit:
            return "too many connections from your address, try again later"
        self.board.opened(self.listener)
        self.board.add(key, 1)
        return None

    def release(self, ip: str) -> None:
        self.board.opened(self.listener, -1)
        self.board.add(f"{self.listener} {ip}", -1)


class Handler(abc.ABC):
    """What a listener does with a session's commands. Each hook returns the reply, or an
    awaitable of it when it must wait (the session runs it as a task meanwhile)."""

    auth = False  # whether AUTH is offered (only ever over TLS)
    auth_required = False  # MAIL, RCPT and DATA only after AUTH
    starttls_required = False  # only EHLO, HELO, NOOP, RSET, QUIT and STARTTLS before TLS
    # Free text after the host name in the 220 greeting (RFC 5321 §4.2): says which worker
    # process took the connection.
    greeting_text = "ESMTP openmailserver"

    def mail(self, session: "Session", address: str) -> Reply:
        return "250 2.1.0 OK"

    @abc.abstractmethod
    def rcpt(self, session: "Session", address: str) -> Reply:
        """Every listener decides whom it accepts mail for."""

    @abc.abstractmethod
    def data(self, session: "Session", raw: bytes) -> Reply:
        """The message (dot-unstuffed, CRLF line ends) of the transaction in `session`."""

    def authenticate(self, session: "Session", username: str, password: str) -> Reply:
        return "504 5.5.4 Unrecognized authentication type"


_BEFORE_TLS = {"EHLO", "HELO", "NOOP", "RSET", "QUIT", "STARTTLS"}
_NEED_AUTH = {"MAIL", "RCPT", "DATA"}


class Session(asyncio.Protocol):
    """One SMTP connection. `limits` is the listener's shared connection counter."""

    def __init__(self, handler: Handler, *, limits: Limits, hostname: str, size_limit: int, timeout: float,
                 tls_context: Optional[ssl.SSLContext] = None, implicit_tls: bool = False) -> None:
        self.handler = handler
        self.limits = limits
        self.hostname = hostname
        self.size_limit = size_limit
        self.timeout = timeout
        self.tls_context = tls_context  # offered with STARTTLS when set
        self.tls_active = implicit_tls  # RFC 8314: the whole connection is TLS
        self.transport: Optional[asyncio.Transport] = None
        self.peer_ip = "?"
        self.admitted = False
        self.closing = False
        self.busy = False  # a command is being worked on; input waits in `buffer`
        self.paused = False
        self.buffer = bytearray()
        self.discarding = False  # inside an over-long line
        self.out: list[bytes] = []
        self.last_activity = 0.0
        self.timer: Optional[asyncio.TimerHandle] = None
        self.task: Optional[asyncio.Future] = None  # the command being worked on, if it must wait
        self.auth_step: Optional[Callable[[str], None]] = None  # waiting for an AUTH response line
        self.hanging_up = False  # close once the reply being worked on is sent
        # What the client told us; reset by STARTTLS (RFC 3207 §4.2).
        self.helo: Optional[str] = None
        self.authenticated: Any = None  # what the handler's authenticate() recorded
        # The mail transaction.
        self.in_data = False
        self.data_buf = bytearray()
        self.data_scanned = 0
        self.data_too_big = False
        self.reset_transaction()

    def reset_transaction(self) -> None:
        self.mail_from: Optional[str] = None
        self.rcpts: list[str] = []
        self.smtputf8 = False
        self.declared_size = 0
        self.txn: dict[str, Any] = {}  # the handler's notes on this transaction

    @property
    def tls_version(self) -> Optional[str]:
        if not self.tls_active or self.transport is None:
            return None
        sslobj = self.transport.get_extra_info("ssl_object")
        return sslobj.version() if sslobj is not None else None

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer_ip = peer[0]
        refusal = self.limits.admit(self.peer_ip)
        if refusal:
            transport.write(f"421 4.7.0 {self.hostname} {refusal}\r\n".encode("ascii"))
            self.closing = True
            transport.close()
            return
        self.admitted = True
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        self.timer = loop.call_later(self.timeout, self._check_idle)
        transport.write(f"220 {self.hostname} {self.handler.greeting_text}\r\n".encode("ascii"))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closing = True
        if self.admitted:
            self.admitted = False
            self.limits.release(self.peer_ip)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check_idle(self) -> None:
        self.timer = None
        if self.closing:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_activity
        if idle >= self.timeout and not self.busy:
            self.reply(f"421 4.4.2 {self.hostname} idle timeout, closing connection")
            self.close()
            return
        self.timer = loop.call_later(max(self.timeout - idle, 0.05), self._check_idle)

    def hang_up(self) -> None:
        """Close the connection after the reply of the command being worked on."""
        self.hanging_up = True

    def close(self) -> None:
        self.flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # -- output ------------------------------------------------------------------------

    def reply(self, text: str) -> None:
        self.out.append(text.encode("utf-8", "replace") + b"\r\n")

    def flush(self) -> None:
        if self.out:
            data = b"".join(self.out)
            self.out.clear()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

    # -- input -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_activity = asyncio.get_running_loop().time()
        self.buffer += data
        if self.busy:
            if len(self.buffer) > MAX_PIPELINED and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            return
        self.process()

    def process(self) -> None:
        """Work through buffered input until it runs out or a command must wait."""
        buffer = self.buffer
        while not self.busy and not self.closing:
            if self.in_data:
                if not self._take_data():
                    break
                continue
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > MAX_LINE:
                    self.discarding = True  # answered once its end arrives
                    buffer.clear()
                break
            line = bytes(buffer[:end + 1])
            del buffer[:end + 1]
            if self.discarding:
                self.discarding = False
                self.reply("500 5.5.2 Line too long")
            elif len(line) > MAX_LINE:
                self.reply("500 5.5.2 Line too long")
            else:
                self._line(line)
        if self.paused and not self.busy and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        self.flush()

    def _line(self, line: bytes) -> None:
        if not line.endswith(b"\r\n") or b"\0" in line:
            self.auth_step = None
            self.reply("500 5.5.2 Line must end in CRLF and hold no NUL characters (RFC 5321 section 2.3.8)")
            return
        try:
            text = line[:-2].decode("utf-8")
        except UnicodeDecodeError:
            self.auth_step = None
            self.reply("500 5.5.2 Commands must be UTF-8")
            return
        if self.auth_step is not None:
            step, self.auth_step = self.auth_step, None
            step(text)
            return
        verb, _, arg = text.strip().partition(" ")
        verb = verb.upper()
        arg = arg.strip()
        command = _COMMANDS.get(verb)
        if command is None:
            if verb:
                self.reply(f'500 5.5.2 Error: command "{verb[:32]}" not recognized')
            else:
                self.reply("500 5.5.2 Error: bad syntax")
            return
        handler = self.handler
        if handler.starttls_required and not self.tls_active and verb not in _BEFORE_TLS:
            self.reply("530 5.7.0 Must issue a STARTTLS command first")
            return
        if handler.auth_required and verb in _NEED_AUTH and self.authenticated is None:
            self.reply("530 5.7.0 Authentication required")
            return
        command(self, arg)

    def _run(self, result: Reply, then: Optional[Callable[[str], None]] = None) -> None:
        """Reply with `result`, now or, if it must be awaited, when it is ready."""
        if not inspect.isawaitable(result):
            if then is not None:
                then(result)
            self.reply(result)
            return
        self.busy = True
        self.flush()  # replies to earlier pipelined commands go out before we wait
        self.task = asyncio.ensure_future(self._finish(result, then))

    async def _finish(self, awaitable: Awaitable[str], then: Optional[Callable[[str], None]]) -> None:
        try:
            text = await awaitable
        except MailError as exc:
            text = exc.smtp_reply()
        except Exception as exc:  # noqa: BLE001 - one failing command must not end the session
            if storage_exhausted(exc):
                text = "452 4.3.1 Insufficient system storage, try again later"
            else:
                log.exception("SMTP command failed for %s", self.peer_ip)
                text = "451 4.3.0 Internal error, try again later"
        if then is not None:
            then(text)
        self.busy = False
        if self.closing:
            return
        self.last_activity = asyncio.get_running_loop().time()
        self.reply(text)
        if self.hanging_up:
            self.close()
            return
        self.process()

    # -- commands ----------------------------------------------------------------------

    def _hello(self, verb: str, arg: str) -> bool:
        """EHLO and HELO both name the client and start afresh (RFC 5321 §4.1.4)."""
        if not arg:
            self.reply(f"501 5.5.4 Syntax: {verb} hostname")
            return False
        self.reset_transaction()
        self.helo = arg
        return True

    def cmd_ehlo(self, arg: str) -> None:
        if not self._hello("EHLO", arg):
            return
        lines = [self.hostname, f"SIZE {self.size_limit}", "8BITMIME", "SMTPUTF8", "PIPELINING",
                 "ENHANCEDSTATUSCODES"]
        if self.tls_context is not None and not self.tls_active:
            lines.append("STARTTLS")
        if self.handler.auth and self.tls_active and self.authenticated is None:
            lines.append("AUTH PLAIN LOGIN")  # RFC 4954 §4: over TLS only
        lines.append("HELP")
        for line in lines[:-1]:
            self.reply("250-" + line)
        self.reply("250 " + lines[-1])

    def cmd_helo(self, arg: str) -> None:
        if self._hello("HELO", arg):
            self.reply(f"250 {self.hostname}")

    def cmd_noop(self, arg: str) -> None:
        self.reply("250 2.0.0 OK")

    def cmd_rset(self, arg: str) -> None:
        if arg:
            self.reply("501 5.5.4 Syntax: RSET")
            return
        self.reset_transaction()
        self.reply("250 2.0.0 OK")

    def cmd_quit(self, arg: str) -> None:
        self.reply("221 2.0.0 Bye")
        self.close()

    def cmd_vrfy(self, arg: str) -> None:
        if not arg:
            self.reply("501 5.5.4 Syntax: VRFY <address>")
        else:  # RFC 5321 §3.5.3: no verification, no refusal either
            self.reply("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery")

    def cmd_expn(self, arg: str) -> None:
        self.reply("502 5.5.1 EXPN not supported")

    def cmd_help(self, arg: str) -> None:
        self.reply("214 2.0.0 Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"
                   + (" STARTTLS" if self.tls_context is not None else "") + (" AUTH" if self.handler.auth else ""))

    def cmd_starttls(self, arg: str) -> None:
        if arg:
            self.reply("501 5.5.4 Syntax: STARTTLS")
        elif self.tls_active:
            self.reply("503 5.5.1 TLS is already active")
        elif self.tls_context is None:
            self.reply("502 5.5.1 STARTTLS not offered here")
        else:
            self.reply("220 2.0.0 Ready to start TLS")
            self.flush()
            # RFC 3207 §4.2 (and CVE-2011-0411): nothing pipelined after STARTTLS survives it.
            self.buffer.clear()
            self.busy = True
            self.task = asyncio.ensure_future(self._start_tls())

    async def _start_tls(self) -> None:
        assert self.transport is not None and self.tls_context is not None
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(self.transport, self, self.tls_context, server_side=True,
                                             ssl_handshake_timeout=min(self.timeout, 60.0))
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            log.info("TLS handshake failed for %s: %s", self.peer_ip, exc)
            self.busy = False
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        if transport is None:  # the connection went away meanwhile
            self.busy = False
            return
        self.transport = transport
        self.tls_active = True
        self.helo = None  # RFC 3207 §4.2: forget what the client said before TLS
        self.authenticated = None
        self.reset_transaction()
        self.busy = False
        self.last_activity = loop.time()
        self.process()

    def cmd_auth(self, arg: str) -> None:
        handler = self.handler
        if not handler.auth or not self.tls_active:
            self.reply("502 5.5.1 AUTH not available" if not handler.auth
                       else "530 5.7.0 Must issue a STARTTLS command first")
            return
        if self.helo is None:
            self.reply("503 5.5.1 Error: send EHLO first")
            return
        if self.authenticated is not None:
            self.reply("503 5.5.1 Already authenticated")
            return
        if self.mail_from is not None:
            self.reply("503 5.5.1 AUTH not permitted during a mail transaction")
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism, initial = mechanism.upper(), initial.strip()
        if mechanism == "PLAIN":
            if initial:
                self._auth_plain(initial)
            else:
                self.reply("334 ")
                self.auth_step = self._auth_plain
        elif mechanism == "LOGIN":
            if initial:
                self._auth_login_user(initial)
            else:
                self.reply("334 VXNlcm5hbWU6")  # "Username:"
                self.auth_step = self._auth_login_user
        else:
            self.reply("504 5.5.4 Unrecognized authentication type")

    def _response(self, text: str, mechanism: str) -> Optional[str]:
        """A client's base64 AUTH response as text; None, after the reply, when it cancelled
        (RFC 4954 §4) or sent something undecodable."""
        if text == "*":
            self.reply("501 5.7.0 Authentication aborted")
            return None
        try:
            # RFC 4954 §4: "=" is an empty initial response.
            return "" if text == "=" else base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            self.reply(f"501 5.5.2 Cannot decode AUTH {mechanism} response")
            return None

    def _auth_plain(self, text: str) -> None:
        value = self._response(text, "PLAIN")
        if value is None:
            return
        parts = value.split("\0", 2)  # RFC 4616: authzid NUL authcid NUL passwd
        if len(parts) != 3:
            self.reply("501 5.5.2 Cannot decode AUTH PLAIN response")
            return
        self._authenticate(parts[1], parts[2])

    def _auth_login_user(self, text: str) -> None:
        user = self._response(text, "LOGIN")
        if user is not None:
            self.reply("334 UGFzc3dvcmQ6")  # "Password:"
            self.auth_step = lambda reply: self._auth_login_password(user, reply)

    def _auth_login_password(self, user: str, text: str) -> None:
        password = self._response(text, "LOGIN")
        if password is not None:
            self._authenticate(user, password)

    def _authenticate(self, user: str, password: str) -> None:
        self._run(self.handler.authenticate(self, user, password))

    def cmd_mail(self, arg: str) -> None:
        if self.helo is None:
            self.reply("503 5.5.1 Error: send HELO first")
            return
        if self.mail_from is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return
        parsed = _path(arg, "FROM:")
        if parsed is None:
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        address, params = parsed
        smtputf8, declared = False, 0
        for param in params:
            key, _, value = param.partition("=")
            key = key.upper()
            if key == "SIZE" and value.isdigit():  # RFC 1870
                declared = int(value)
                if declared > self.size_limit:
                    self.reply("552 5.3.4 Message size exceeds fixed maximum message size")
                    return
            elif key == "BODY" and value.upper() in _BODY_TYPES:  # RFC 6152
                pass
            elif key == "SMTPUTF8" and not value:  # RFC 6531 §3.4
                smtputf8 = True
            elif key == "AUTH" and value:  # RFC 4954 §5: noted by the client, not needed here
                pass
            else:  # RFC 5321 §4.1.1.11: a parameter we do not support is refused with 555
                self.reply(f"555 5.5.4 Unsupported MAIL FROM parameter: {param[:64]}")
                return
        if not smtputf8 and not address.isascii():
            self.reply("553 5.6.7 Non-ASCII address needs SMTPUTF8 (RFC 6531 section 3.4)")
            return

        def accepted(text: str) -> None:
            if text.startswith("2"):
                self.mail_from = address
                self.smtputf8 = smtputf8
                self.declared_size = declared

        self._run(self.handler.mail(self, address), accepted)

    def cmd_rcpt(self, arg: str) -> None:
        if self.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        parsed = _path(arg, "TO:")
        if parsed is None or not parsed[0]:
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        address, params = parsed
        if params:  # we offer no RCPT extension (no DSN): RFC 5321 §4.1.1.11, 555
            self.reply(f"555 5.5.4 Unsupported RCPT TO parameter: {params[0][:64]}")
            return
        if not self.smtputf8 and not address.isascii():
            self.reply("553 5.6.7 Non-ASCII address needs SMTPUTF8 (RFC 6531 section 3.4)")
            return

        def accepted(text: str) -> None:
            if text.startswith("2"):
                self.rcpts.append(address)

        self._run(self.handler.rcpt(self, address), accepted)

    def cmd_data(self, arg: str) -> None:
        if arg:
            self.reply("501 5.5.4 Syntax: DATA")
            return
        if self.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        if not self.rcpts:
            self.reply("503 5.5.1 Error: need RCPT command")
            return
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        self.in_data = True
        self.data_buf = bytearray(b"\r\n")  # the CRLF that ended the DATA line starts the first line
        self.data_scanned = 0
        self.data_too_big = False

    def _take_data(self) -> bool:
        """Move buffered input into the message; True once its end has been seen and handled."""
        data = self.data_buf
        data += self.buffer
        self.buffer.clear()
        end = data.find(b"\r\n.\r\n", max(self.data_scanned - 4, 0))
        if end < 0:
            # The message is at least what follows the leading CRLF, less a partial end
            # marker (".", ".\r"): never refuse one that is exactly at the limit.
            if len(data) - 4 > self.size_limit:
                # Too big: keep only what may hold the start of the end marker.
                self.data_too_big = True
                del data[2:-4]
            self.data_scanned = len(data)
            return False
        self.buffer[:0] = data[end + 5:]  # commands pipelined after the final dot
        self.in_data = False
        if self.data_too_big or end > self.size_limit:
            self.data_buf = bytearray()
            self.reset_transaction()
            self.reply("552 5.3.4 Message too big for system")
            return True
        # RFC 5321 §4.5.2: a line's leading period was added by the client; take it away
        # (one copy of the message when no line starts with one).
        if data.find(b"\r\n.", 0, end + 2) < 0:
            raw = bytes(memoryview(data)[2:end + 2])
        else:
            raw = bytes(data[:end + 2]).replace(b"\r\n.", b"\r\n")[2:]
        self.data_buf = bytearray()
        self._run(self.handler.data(self, raw), lambda _: self.reset_transaction())
        return True


_COMMANDS: dict[str, Callable[[Session, str], None]] = {
    "EHLO": Session.cmd_ehlo, "HELO": Session.cmd_helo, "MAIL": Session.cmd_mail, "RCPT": Session.cmd_rcpt,
    "DATA": Session.cmd_data, "RSET": Session.cmd_rset, "NOOP": Session.cmd_noop, "QUIT": Session.cmd_quit,
    "VRFY": Session.cmd_vrfy, "EXPN": Session.cmd_expn, "HELP": Session.cmd_help,
    "STARTTLS": Session.cmd_starttls, "AUTH": Session.cmd_auth,
}


def _path(arg: str, keyword: str) -> Optional[tuple[str, list[str]]]:
    """`FROM:<address> PARAMS` (or `TO:`): the address without brackets and source route
    (RFC 5321 §4.1.2, §C) and the parameters; None when malformed."""
    if arg[:len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword):].lstrip()
    if rest.startswith("<"):
        quoted = escaped = False
        for i in range(1, len(rest)):
            ch = rest[i]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == ">" and not quoted:
                address, params = rest[1:i], rest[i + 1:]
                break
            elif ch in "<" and not quoted:
                return None
        else:
            return None
        if params and not params.startswith(" "):
            return None
        if address.startswith("@"):  # an obsolete source route: ignored (RFC 5321 §C)
            route, colon, address = address.partition(":")
            if not colon:
                return None
    else:  # no angle brackets: accepted, as most servers do
        address, _, params = rest.partition(" ")
        if not address or "<" in address or ">" in address:
            return None
    return address, params.split()
