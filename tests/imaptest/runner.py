"""Plays Dovecot imaptest scripts (../shared/imaptest/scripts, see FORMAT.md) against a server.

A script is parsed into command groups; each group runs on one connection
(pipelined when it has several tagged commands) while the other connections
are not read, so what the server says to them waits in their sockets until
their next group, as in imaptest. Replies are tokenised the way imaptest's
parser does it (atoms end at a space, `(` opens a list, `"` a string, `{n}` and
`~{n}` a literal) and matched with imaptest's rules:

* case-insensitive, `$var` / `${var}` bind on first use and must match later,
  `$` alone matches any value (a list too), `$N` is a sequence number as the
  session knew it when the group started (updated by EXPUNGE replies);
* lists may carry `$!unordered[=N]`, `$!ordered`, `$!noextra`, `$!extra`,
  `$!ignore=X`, `$!ban=X`; LIST/LSUB flags, STATUS items, FETCH items and
  FETCH FLAGS get imaptest's default directives;
* `*` replies must arrive (in any order unless `!ordered`), `!` replies must
  not, `?` may; untagged OK/NO/BAD/BYE and tagged replies match by prefix.

It also keeps each session's view of the mailbox and fails a script, as
imaptest does, when the server contradicts itself: EXISTS going down, an
EXPUNGE of a sequence number that does not exist or while a FETCH, STORE or
SEARCH is running, a UID or INTERNALDATE that changes, \\Recent given to two
sessions, a tagged BAD nobody expected, an unexpected disconnection.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

TIMEOUT = 15.0


class ScriptError(Exception):
    """The script itself could not be parsed."""


class TestFailure(Exception):
    pass


# ---------------------------------------------------------------------------
# Tokens: what imaptest's parser makes of a line
# ---------------------------------------------------------------------------


class Atom(str):
    __slots__ = ()


class Text(str):
    """A quoted string or a literal (imaptest compares both as strings)."""

    __slots__ = ()


class _Nil:
    def __repr__(self) -> str:
        return "NIL"


NIL = _Nil()
Value = Any  # Atom | Text | NIL | list


def tokenize(data: bytes, pos: int = 0) -> tuple[list[Value], int]:
    """Parse one line (with inline `{n}\\r\\n` literals) from `pos`; returns (args, end).

    Strings are decoded as Latin-1 so that every byte survives.
    """
    root: list[Value] = []
    stack = [root]
    n = len(data)
    while pos < n:
        c = data[pos]
        if c == 0x20:
            pos += 1
            continue
        if c in (0x0D, 0x0A):
            if len(stack) > 1:
                raise ValueError("missing ')'")
            if c == 0x0D:
                pos += 1
            if pos < n and data[pos] == 0x0A:
                pos += 1
            return root, pos
        if c == 0x28:  # (
            new: list[Value] = []
            stack[-1].append(new)
            stack.append(new)
            pos += 1
            continue
        if c == 0x29:  # )
            if len(stack) == 1:
                # imaptest's parser keeps a stray ')' at top level inside an atom
                end = _atom_end(data, pos, inside_list=False)
                root.append(Atom(data[pos:end].decode("latin-1")))
                pos = end
                continue
            stack.pop()
            pos += 1
            continue
        if c == 0x22:  # "
            pos += 1
            buf = bytearray()
            while pos < n and data[pos] != 0x22:
                if data[pos] == 0x5C and pos + 1 < n:
                    pos += 1
                buf.append(data[pos])
                pos += 1
            if pos >= n:
                raise ValueError("missing '\"'")
            pos += 1
            stack[-1].append(Text(buf.decode("latin-1")))
            continue
        if c == 0x7B or (c == 0x7E and pos + 1 < n and data[pos + 1] == 0x7B):  # { or ~{
            m = re.compile(rb"~?\{(\d+)\+?\}\r?\n").match(data, pos)
            if m is None:
                raise ValueError("bad literal")
            size = int(m.group(1))
            start = m.end()
            if start + size > n:
                raise ValueError("truncated literal")
            stack[-1].append(Text(data[start:start + size].decode("latin-1")))
            pos = start + size
            continue
        end = _atom_end(data, pos, inside_list=len(stack) > 1)
        word = data[pos:end].decode("latin-1")
        stack[-1].append(NIL if word.upper() == "NIL" else Atom(word))
        pos = end
    if len(stack) > 1:
        raise ValueError("missing ')'")
    return root, pos


def _atom_end(data: bytes, pos: int, inside_list: bool) -> int:
    n = len(data)
    i = pos
    while i < n:
        c = data[i]
        if c in (0x20, 0x0D, 0x0A):
            break
        if c == 0x29 and inside_list:
            break
        i += 1
    return i


def render(args: list[Value]) -> str:
    out = []
    for a in args:
        if isinstance(a, list):
            out.append("(" + render(a) + ")")
        elif a is NIL:
            out.append("NIL")
        elif isinstance(a, Text):
            text = str(a)
            out.append('"' + (text if len(text) < 200 else text[:200] + "...") + '"')
        else:
            out.append(str(a))
    return " ".join(out)


# ---------------------------------------------------------------------------
# Scripts
# ---------------------------------------------------------------------------


@dataclass
class Command:
    conn: int
    tag: int  # 0: no explicit tag
    text: bytes
    reply: Optional[list[Value]]  # expected tagged reply, e.g. [Atom("ok"), Atom("[trycreate]")]
    line: int


@dataclass
class Untagged:
    args: list[Value]
    existence: str  # "*" must, "!" must not, "?" may


@dataclass
class Group:
    conn: int = 0
    commands: list[Command] = field(default_factory=list)
    untagged: list[Untagged] = field(default_factory=list)
    ordered: bool = False
    have_bye: bool = False
    sleep: float = 0.0
    pending: int = 0


@dataclass
class Script:
    name: str
    path: Path
    mbox: Path
    capabilities: list[str] = field(default_factory=list)
    connections: int = 1
    messages: int = 0  # -1: all
    state: str = "selected"
    ignore_extra: bool = True
    groups: list[Group] = field(default_factory=list)
    users: dict[int, str] = field(default_factory=dict)  # connection index -> user (template)
    require_user2: bool = False

    @property
    def base_protocol(self) -> bool:
        return not self.capabilities


_STATES = {"nonauth", "auth", "created", "appended", "selected"}


def _split_lines(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """Logical lines; `{{{` ... `}}}` blocks become `{n}\\r\\n` literals (`~{{{`: literal8)."""
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i]
        i += 1
        while line.endswith(b"{{{"):
            binary = line.endswith(b"~{{{")
            head = line[:-4] if binary else line[:-3]
            parts: list[bytes] = []
            while True:
                if i >= len(lines):
                    raise ScriptError(f"line {number}: multiline value not closed")
                current = lines[i]
                i += 1
                if current.startswith(b"}}}"):
                    body = (b"\n" if binary else b"\r\n").join(parts)
                    literal = (b"~" if binary else b"") + b"{%d}\r\n" % len(body) + body
                    line = head + literal + current[3:]
                    break
                parts.append(current)
        yield number, line


def _reply_of(text: bytes) -> tuple[Optional[list[Value]], int, bytes]:
    """(expected reply, explicit tag, rest) when a line starts with [tagN] ok|no|bad|""."""
    tag = 0
    m = re.match(rb"tag(\d+) ", text, re.I)
    if m and int(m.group(1)) > 0:
        tag = int(m.group(1))
        text = text[m.end():]
    word = text.split(b" ", 1)[0]
    key = word.lower()
    if key in (b"ok", b"no", b"bad", b'""'):
        rest = text[len(word):].lstrip(b" ")
        status = [Atom("" if key == b'""' else key.decode())]
        return status, tag, rest
    return None, tag, text


def parse_script(path: Path, default_mbox: Path, environ: Optional[dict[str, str]] = None) -> Script:
    environ = dict(os.environ) if environ is None else environ
    mbox = path.with_name(path.name + ".mbox")
    script = Script(path.name, path, mbox if mbox.exists() else default_mbox)
    raw = path.read_bytes()
    header = True
    group: Optional[Group] = None
    skip_stack: list[tuple[bool, bool]] = []  # (outer skip, else seen)
    skip = False
    for number, line in _split_lines(raw):
        if header:
            if not line.strip():
                header = False
                continue
            if line.startswith(b"#"):
                continue
            key, sep, value = line.decode("utf-8").partition(":")
            if not sep:
                raise ScriptError(f"{path.name} line {number}: missing ':'")
            key, value = key.strip().lower(), value.strip()
            if key == "capabilities":
                script.capabilities = value.split()
            elif key == "connections":
                script.connections = int(value)
            elif key == "messages":
                script.messages = -1 if value == "all" else int(value)
            elif key == "state":
                if value.lower() not in _STATES:
                    raise ScriptError(f"{path.name}: unknown state {value}")
                script.state = value.lower()
            elif key == "ignore_extra_untagged":
                script.ignore_extra = value.lower().startswith("y")
            elif re.fullmatch(r"user [1-9][0-9]*", key):
                index = int(key.split()[1]) - 1
                if value in ("$user2", "${user2}"):
                    script.require_user2 = True
                script.users[index] = value
            else:
                raise ScriptError(f"{path.name} line {number}: unknown setting {key}")
            continue
        text = line.rstrip(b"\r")
        if text.startswith(b"!ifenv ") or text.startswith(b"!ifnenv "):
            name = text.split(b" ", 1)[1].decode().strip()
            present = name in environ
            want = present if text.startswith(b"!ifenv ") else not present
            skip_stack.append((skip, False))
            skip = skip or not want
            continue
        if text == b"!else":
            outer, _ = skip_stack.pop()
            skip_stack.append((outer, True))
            if not outer:
                skip = not skip
            continue
        if text == b"!endif":
            skip, _ = skip_stack.pop()
            continue
        if skip:
            continue
        if not text.strip():
            if group is not None and group.pending == 0:
                group = None
            continue
        if text.startswith(b"#"):
            continue
        group = _parse_command_line(script, group, text, number)
    if group is not None and group.pending:
        raise ScriptError(f"{path.name}: missing reply at end of file")
    if not any(c.text.strip().lower() == b"logout" for g in script.groups for c in g.commands) and \
            not any(g.have_bye for g in script.groups):
        script.groups.append(Group(conn=0, commands=[Command(0, 0, b"logout", [Atom("ok")], 0)]))
    return script


def _parse_command_line(script: Script, group: Optional[Group], text: bytes, number: int) -> Group:
    multi = script.connections > 1
    if group is not None:
        if text.startswith(b"!sleep "):
            group.sleep = float(text.split()[1].rstrip(b"ms").decode() or 0) / (1000 if b"ms" in text else 1)
            return group
        if text == b"!ordered":
            group.ordered = True
            return group
        if text[:2] in (b"* ", b"! ", b"? "):
            _add_untagged(group, text[2:], text[:1].decode(), number)
            return group
        if group.pending:
            body = text
            conn = 0
            m = re.match(rb"(\d+) ", body)
            if multi and m:
                conn = int(m.group(1))
                body = body[m.end():]
            reply, tag, rest = _reply_of(body)
            if reply is not None:
                if multi and conn - 1 != group.conn:
                    raise ScriptError(f"line {number}: reply for the wrong connection")
                cmd = next((c for c in group.commands if c.tag == tag and c.reply is None), None)
                if cmd is None:
                    raise ScriptError(f"line {number}: reply for an unknown tag")
                args, _ = tokenize(body + b"\r\n")
                if tag:
                    args = args[1:]
                args[0] = reply[0]
                cmd.reply = args
                group.pending -= 1
                return group
    if group is None or group.pending == 0:
        group = Group()
        script.groups.append(group)
    conn = 0
    body = text
    if multi:
        m = re.match(rb"(\d+) ", body + b" ")
        if not m or int(m.group(1)) == 0:
            raise ScriptError(f"line {number}: missing connection number")
        conn = int(m.group(1)) - 1
        if group.commands and group.conn != conn:
            raise ScriptError(f"line {number}: pipelined commands must use one connection")
        body = body[m.end():] if m.end() <= len(body) else b""
        script.connections = max(script.connections, conn + 1)
    group.conn = conn
    reply, tag, rest = _reply_of(body)
    if not group.commands and rest[:2] in (b"* ", b"! ", b"? "):
        raise ScriptError(f"line {number}: banner checks are not supported")
    if reply is None:
        group.pending += 1
    group.commands.append(Command(conn, tag, rest, reply, number))
    return group


def _add_untagged(group: Group, text: bytes, existence: str, number: int) -> None:
    args, _ = tokenize(text + b"\r\n")
    name = ""
    if args and isinstance(args[0], Atom):
        name = str(args[0])
        if (name.startswith("$") or name[:1].isdigit()) and len(args) > 1 and isinstance(args[1], Atom):
            name = str(args[1])
    _default_directives(args, name.lower(), None, 0, 1)
    if name.lower().startswith("bye") and existence == "*":
        group.have_bye = True
    group.untagged.append(Untagged(args, existence))


def _has_directives(args: list[Value]) -> bool:
    return bool(args) and isinstance(args[0], Atom) and str(args[0]).startswith("$!")


def _default_directives(args: list[Value], reply: str, parent: Optional[dict], chain_idx: int, chain: int,
                        prev_atom: Optional[str] = None, depth: int = 0) -> None:
    """imaptest's implicit directives for LIST/LSUB flags, STATUS items, FETCH items and FLAGS."""
    ctx = {"parent": parent, "chain_idx": chain_idx, "chain": chain}
    explicit = _has_directives(args)
    for a in args:
        if isinstance(a, Atom) and str(a).startswith("$!unordered="):
            ctx["chain"] = int(str(a).split("=", 1)[1])
    if not explicit and parent is not None:
        top = parent["parent"] is None
        if reply in ("list", "lsub") and top and chain_idx == 1:
            args.insert(0, Atom("$!unordered"))
        elif reply == "status" and top and chain_idx == 2:
            args.insert(0, Atom("$!unordered=2"))
            ctx["chain"] = 2
        elif reply == "fetch":
            if top and chain_idx == 2:
                args.insert(0, Atom("$!unordered=2"))
                ctx["chain"] = 2
            elif parent["parent"] is not None and parent["parent"]["parent"] is None and \
                    parent["chain_idx"] == 2 and prev_atom == "flags":
                args[0:0] = [Atom("$!unordered"), Atom("$!noextra"), Atom("$!ignore=\\recent"),
                             Atom("$!ignore=$HasAttachment"), Atom("$!ignore=$HasNoAttachment")]
    directives = 0
    while directives < len(args) and isinstance(args[directives], Atom) and str(args[directives]).startswith("$!"):
        directives += 1
    last_atom: Optional[str] = None
    for i, a in enumerate(args[directives:]):
        if isinstance(a, Atom):
            last_atom = str(a).lower()
        if isinstance(a, list):
            sub_idx = i if ctx["chain"] == 1 else i % ctx["chain"]
            _default_directives(a, reply, ctx, sub_idx, 1, last_atom, depth + 1)


# ---------------------------------------------------------------------------
# mbox
# ---------------------------------------------------------------------------

_FROM_LINE = re.compile(rb"^From \S+ +(\w{3}) (\w{3}) +(\d+) (\d\d:\d\d:\d\d) (\d{4})")


class Mbox:
    """Messages of an mbox file, cycled like imaptest's mailbox source."""

    def __init__(self, path: Path) -> None:
        self.messages: list[tuple[bytes, str]] = []
        data = path.read_bytes()
        starts = [m.start() for m in re.finditer(rb"(?m)^From [^\n]*\n", data)]
        for idx, start in enumerate(starts):
            line_end = data.index(b"\n", start) + 1
            end = starts[idx + 1] if idx + 1 < len(starts) else len(data)
            body = re.sub(rb"(?<!\r)\n", b"\r\n", data[line_end:end])
            m = _FROM_LINE.match(data[start:line_end])
            when = datetime.now()
            if m:
                when = datetime.strptime(
                    f"{int(m.group(3))} {m.group(2).decode()} {m.group(5).decode()} {m.group(4).decode()}",
                    "%d %b %Y %H:%M:%S")
            self.messages.append((body, when.strftime("%d-%b-%Y %H:%M:%S +0000")))
        self.next = 0

    def take(self) -> tuple[bytes, str]:
        msg = self.messages[self.next % len(self.messages)]
        self.next += 1
        return msg

    @property
    def at_end(self) -> bool:
        return self.next >= len(self.messages)


# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------


class Conn:
    """One IMAP connection with imaptest-like state tracking."""

    def __init__(self, runner: "Runner", index: int) -> None:
        self.runner = runner
        self.index = index
        self.sock = socket.create_connection((runner.host, runner.port), timeout=TIMEOUT)
        self.buf = b""
        self.counter = 0
        self.closed = False
        self.logout_sent = False
        self.seen_bye = False
        self.capabilities: list[str] = []
        self.uids: list[int] = []  # 0 = unknown
        self.idates: dict[int, str] = {}
        self.msgids: dict[int, str] = {}
        self.selected = ""
        self.running: dict[str, str] = {}  # tag -> command name of outstanding commands

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_tag(self) -> str:
        self.counter += 1
        return f"{self.index + 1}.{self.counter}"

    def read_line(self, deadline: float) -> Optional[bytes]:
        """One complete response (with its literals), or None when the server closed."""
        while True:
            line = self._complete()
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TestFailure(f"connection {self.index + 1}: timed out waiting for the server")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TestFailure(f"connection {self.index + 1}: timed out waiting for the server") from None
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def _complete(self) -> Optional[bytes]:
        pos = 0
        while True:
            nl = self.buf.find(b"\n", pos)
            if nl < 0:
                return None
            m = re.search(rb"~?\{(\d+)\+?\}\r?$", self.buf[pos:nl])
            if m is None:
                line = self.buf[:nl + 1]
                self.buf = self.buf[nl + 1:]
                return line
            size = int(m.group(1))
            if len(self.buf) < nl + 1 + size:
                return None
            pos = nl + 1 + size

    def has_buffered(self) -> bool:
        return bool(self.buf)

    # -- state tracking -----------------------------------------------------------

    def track(self, args: list[Value]) -> None:
        """Follow EXISTS/EXPUNGE/FETCH like imaptest's mailbox view; fail on contradictions."""
        if not args or not isinstance(args[0], Atom):
            return
        first = str(args[0]).upper()
        if first == "BYE":
            self.seen_bye = True
            if not self.logout_sent:
                self.runner.warn(f"connection {self.index + 1}: unexpected BYE")
            return
        if first == "CAPABILITY":
            self.capabilities = [str(a).upper() for a in args[1:]]
            return
        if not first.isdigit() or len(args) < 2 or not isinstance(args[1], Atom):
            return
        num = int(first)
        kind = str(args[1]).upper()
        if kind == "EXISTS":
            if num < len(self.uids):
                raise TestFailure(f"connection {self.index + 1}: message count dropped {len(self.uids)} -> {num}")
            self.uids.extend([0] * (num - len(self.uids)))
        elif kind == "EXPUNGE":
            if num == 0 or num > len(self.uids):
                raise TestFailure(f"connection {self.index + 1}: EXPUNGE {num} with only {len(self.uids)} messages")
            busy = [c for c in self.running.values() if c in ("FETCH", "STORE", "SEARCH")]
            if busy:
                raise TestFailure(f"connection {self.index + 1}: EXPUNGE sent during {busy[0]} (RFC 3501 7.4.1)")
            self.uids.pop(num - 1)
        elif kind == "FETCH":
            if num == 0 or num > len(self.uids):
                self.runner.warn(f"connection {self.index + 1}: FETCH for sequence {num} > {len(self.uids)}")
                return
            if len(args) < 3 or not isinstance(args[2], list):
                raise TestFailure(f"connection {self.index + 1}: FETCH didn't return a list")
            items = args[2]
            values = {str(items[i]).upper(): items[i + 1] for i in range(0, len(items) - 1, 2)
                      if isinstance(items[i], Atom)}
            uid = self.uids[num - 1]
            if "UID" in values:
                new = int(str(values["UID"]))
                if uid and uid != new:
                    raise TestFailure(f"connection {self.index + 1}: UID changed for sequence {num}: {uid} -> {new}")
                self.uids[num - 1] = uid = new
            if "FLAGS" in values:
                flags = values["FLAGS"]
                if not isinstance(flags, list):
                    raise TestFailure(f"connection {self.index + 1}: FLAGS reply isn't a list")
                for flag in flags:
                    if not isinstance(flag, Atom):
                        raise TestFailure(f"connection {self.index + 1}: flags list contains non-atoms")
                    if flag.startswith("\\") and flag.lower() not in (
                            "\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft", "\\recent"):
                        raise TestFailure(f"connection {self.index + 1}: invalid system flag {flag}")
                if uid and any(str(f).lower() == "\\recent" for f in flags):
                    self.runner.claim_recent(self.selected, uid, self)
            if uid and "INTERNALDATE" in values:
                date = str(values["INTERNALDATE"])
                if self.idates.setdefault(uid, date) != date:
                    raise TestFailure(f"connection {self.index + 1}: UID={uid} INTERNALDATE changed")
            if uid and isinstance(values.get("ENVELOPE"), list) and len(values["ENVELOPE"]) >= 10:
                msgid = values["ENVELOPE"][9]
                if isinstance(msgid, Text):
                    known = self.runner.message_ids.setdefault((self.selected, uid), str(msgid))
                    if known != str(msgid):
                        raise TestFailure(f"UID {uid} changed Message-Id: {known} -> {msgid}")

    def reset_view(self) -> None:
        self.uids = []
        self.idates = {}


# ---------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------

_VAR_CHARS = re.compile(r"[A-Za-z0-9_]*")


class Matcher:
    def __init__(self, variables: dict[str, str]) -> None:
        self.vars = variables
        self.seqmap: list[int] = []
        self.added: list[str] = []

    def relative(self, number: int) -> str:
        if number == 0:
            return "<zero seq>"
        if number > len(self.seqmap):
            return "<out of range>"
        seq = self.seqmap[number - 1]
        return "<expunged>" if seq == 0 else str(seq)

    def expunged(self, seq: int) -> None:
        for i, current in enumerate(self.seqmap):
            if current == seq:
                self.seqmap[i] = 0
            elif current > seq:
                self.seqmap[i] = current - 1

    def expand_command(self, text: str) -> str:
        out = []
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c != "$" or i + 1 == n:
                out.append(c)
                i += 1
                continue
            i += 1
            if text[i] == "$":
                out.append("$")
                i += 1
                continue
            if text[i] == "{":
                end = text.index("}", i)
                name = text[i + 1:end]
                i = end + 1
            else:
                name = _VAR_CHARS.match(text, i).group(0)  # type: ignore[union-attr]
                i += len(name)
            if name.isdigit():
                out.append(self.relative(int(name)))
            elif name in self.vars:
                out.append(self.vars[name])
            else:
                raise TestFailure(f"uninitialized variable ${name}")
        return "".join(out)

    def expand_input(self, pattern: str, value: str) -> Optional[tuple[str, bool]]:
        """imaptest's test_expand_input: bind/compare variables; (expanded, case-insensitive)."""
        out: list[str] = []
        icase = True
        i, j = 0, 0
        n = len(pattern)
        while i < n:
            c = pattern[i]
            if c != "$" or pattern[i + 1:i + 2] == "$":
                if c == "$":
                    i += 1
                if j >= len(value) or pattern[i].upper() != value[j].upper():
                    return None
                out.append(pattern[i])
                i += 1
                j += 1
                continue
            i += 1
            if pattern[i:i + 1] == "{":
                end = pattern.find("}", i)
                if end < 0:
                    return "", icase
                name = pattern[i + 1:end]
                i = end + 1
            else:
                name = _VAR_CHARS.match(pattern, i).group(0)  # type: ignore[union-attr]
                i += len(name)
            if name.isdigit():
                expanded = self.relative(int(name))
            elif name.startswith("case:"):
                icase = False
                expanded = ""
            else:
                expanded = self.vars.get(name) if name else None  # type: ignore[assignment]
                if expanded is None:
                    rest = pattern[i:]
                    if rest.startswith("$"):
                        sub = self.expand_input(rest, value[j:])
                        stop = sub[0][:1] if sub else ""
                    else:
                        stop = rest[:1]
                    k = j
                    if stop:
                        while k < len(value) and value[k].upper() != stop.upper():
                            k += 1
                    else:
                        k = len(value)
                    expanded = value[j:k]
                    if name:
                        self.vars[name] = expanded
                        self.added.append(name)
            out.append(expanded)
            if value[j:j + len(expanded)] != expanded:
                return None
            j += len(expanded)
        return "".join(out), icase

    def match_args(self, pattern: list[Value], args: list[Value], limit: Optional[int] = None,
                   prefix: bool = False) -> int:
        """Number of matching leading arguments; -1 means a complete match."""
        count = 0
        pi = 0
        ai = 0
        while pi < len(pattern) and (limit is None or count < limit):
            m = pattern[pi]
            a = args[ai] if ai < len(args) else None
            if m is NIL:
                if a is not NIL:
                    return count
            elif isinstance(m, list):
                if not isinstance(a, list):
                    return count
                sub = self.match_list(m, a)
                if sub != -1:
                    return count + sub
            else:
                mstr = str(m)
                if mstr == "$" and isinstance(a, list):
                    pass
                elif mstr == "$]":
                    while ai < len(args) and isinstance(args[ai], Atom) and "]" not in args[ai]:
                        ai += 1
                else:
                    if a is None or a is NIL or isinstance(a, list):
                        return count
                    expanded = self.expand_input(mstr, str(a))
                    if expanded is None:
                        return count
                    text, icase = expanded
                    last = pi == len(pattern) - 1
                    if prefix and last:
                        ok = str(a).lower().startswith(text.lower()) if icase else str(a).startswith(text)
                    else:
                        ok = str(a).lower() == text.lower() if icase else str(a) == text
                    if not ok:
                        return count
            pi += 1
            ai += 1
            count += 1
        if prefix or ai >= len(args) or (limit is not None and count >= limit):
            return -1
        return count

    def match_list(self, pattern: list[Value], args: list[Value]) -> int:
        unordered = False
        chain = 1
        noextra: Optional[bool] = None
        ignores: list[str] = []
        bans: list[str] = []
        k = 0
        while k < len(pattern) and isinstance(pattern[k], Atom) and str(pattern[k]).startswith("$!"):
            d = str(pattern[k])[2:]
            if d.startswith("unordered"):
                unordered = True
                if noextra is None:
                    noextra = False
                if d.startswith("unordered="):
                    chain = int(d.split("=", 1)[1])
            elif d == "ordered":
                unordered = False
            elif d == "extra":
                noextra = False
            elif d == "noextra":
                noextra = True
            elif d.startswith("ignore="):
                ignores.append(d[7:].lower())
            elif d.startswith("ban="):
                bans.append(d[4:].lower())
            k += 1
        pattern = pattern[k:]
        if noextra is None:
            noextra = True
        if not unordered:
            return self.match_args(pattern, args)
        if len(args) % chain:
            return 0
        matched = [False] * len(args)
        done = 0
        for pstart in range(0, len(pattern), chain):
            piece = pattern[pstart:pstart + chain]
            for astart in range(0, len(args), chain):
                saved = dict(self.vars)
                if self.match_args(piece, args[astart:astart + chain], limit=chain) == -1:
                    matched[astart] = True
                    break
                self.vars.clear()
                self.vars.update(saved)
            else:
                return done
            done += 1
        for astart in range(0, len(args), chain):
            if matched[astart]:
                continue
            value = args[astart]
            if isinstance(value, list) or value is NIL:
                continue
            if noextra and str(value).lower() not in ignores:
                return done
            if not noextra and str(value).lower() in bans:
                return done
        return -1


# ---------------------------------------------------------------------------
# Running scripts
# ---------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    status: str  # "passed", "failed", "skipped"
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    base_protocol: bool = True


class Runner:
    def __init__(self, host: str, port: int, user: str, password: str, mailbox: str = "imaptest") -> None:
        self.host, self.port, self.user, self.password, self.mailbox = host, port, user, password, mailbox
        self.warnings: list[str] = []
        self.recent_owner: dict[tuple[str, int], int] = {}
        self.message_ids: dict[tuple[str, int], str] = {}

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def claim_recent(self, mailbox: str, uid: int, conn: Conn) -> None:
        owner = self.recent_owner.setdefault((mailbox, uid), conn.index)
        if owner != conn.index:
            raise TestFailure(f"message UID={uid} has \\Recent in sessions {owner + 1} and {conn.index + 1}")

    # -- the whole script -----------------------------------------------------------

    def run(self, script: Script) -> Result:
        self.warnings = []
        self.recent_owner = {}
        self.message_ids = {}
        conns: list[Conn] = []
        result = Result(script.name, "passed", base_protocol=script.base_protocol)
        try:
            variables = {"mailbox": self.mailbox, "user": self.user, "username": self.user.split("@")[0],
                         "domain": self.user.partition("@")[2] or self.host, "password": self.password,
                         "mailbox_url": self.mailbox}
            for i in range(script.connections):
                conns.append(Conn(self, i))
                key = "" if i == 0 else str(i + 1)
                variables["user" + key] = self.user
                variables["username" + key] = self.user.split("@")[0]
                variables["password" + key] = self.password
            for conn in conns:
                greeting = conn.read_line(time.monotonic() + TIMEOUT)
                if greeting is None or not greeting.upper().startswith(b"* OK"):
                    raise TestFailure(f"bad greeting {greeting!r}")
                m = re.search(rb"\[CAPABILITY ([^\]]*)\]", greeting)
                if m:
                    conn.capabilities = m.group(1).decode().upper().split()
            mbox = Mbox(script.mbox)
            if script.require_user2:
                result.status = "skipped"
                result.message = "needs a second user"
                return result
            if not self.setup(script, conns, mbox):
                result.status = "skipped"
                result.message = "server lacks " + " ".join(
                    c for c in script.capabilities if c.upper() not in conns[0].capabilities)
                return result
            matcher = Matcher(variables)
            for index, group in enumerate(script.groups):
                try:
                    self.run_group(script, group, conns, matcher, mbox)
                except TestFailure as exc:
                    cmd = group.commands[0] if group.commands else None
                    where = f"group {index + 1} (line {cmd.line}: {cmd.text.decode('latin-1')[:120]})" if cmd else ""
                    raise TestFailure(f"{where}: {exc}") from None
        except TestFailure as exc:
            result.status = "failed"
            result.message = str(exc)
        except (OSError, ValueError) as exc:
            result.status = "failed"
            result.message = f"{type(exc).__name__}: {exc}"
        finally:
            for conn in conns:
                conn.close()
            result.warnings = list(self.warnings)
        return result

    # -- start-up state -------------------------------------------------------------

    def simple(self, conn: Conn, text: str, ok: bool = True) -> tuple[str, list[list[Value]]]:
        """Send one command; returns (status, untagged replies)."""
        tag = conn.next_tag()
        conn.send(f"{tag} {text}\r\n".encode("utf-8"))
        return self._wait(conn, tag, text, ok)

    def _wait(self, conn: Conn, tag: str, text: str, ok: bool) -> tuple[str, list[list[Value]]]:
        untagged: list[list[Value]] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            line = conn.read_line(deadline)
            if line is None:
                raise TestFailure(f"disconnected during {text}")
            args, _ = tokenize(line)
            if not args:
                continue
            if str(args[0]) == "*":
                conn.track(args[1:])
                untagged.append(args[1:])
            elif str(args[0]) == tag:
                status = str(args[1]).upper() if len(args) > 1 else ""
                if ok and status != "OK":
                    raise TestFailure(f"{text} failed: {line!r}")
                return status, untagged

    def append(self, conn: Conn, prefix: str, mbox: Mbox) -> tuple[str, str, bytes]:
        """Send an APPEND of the next mbox message; returns (tag, command text, message)."""
        body, date = mbox.take()
        plus = "+" if "LITERAL+" in conn.capabilities else ""
        tag = conn.next_tag()
        head = f"{tag} APPEND {prefix} {{{len(body)}{plus}}}\r\n".encode("utf-8")
        conn.send(head)
        if not plus:
            deadline = time.monotonic() + TIMEOUT
            while True:
                line = conn.read_line(deadline)
                if line is None:
                    raise TestFailure("disconnected during APPEND")
                if line.startswith(b"+"):
                    break
                args, _ = tokenize(line)
                if str(args[0]) == "*":
                    conn.track(args[1:])
                    continue
                return tag, "APPEND", b""  # refused before the literal
        conn.send(body + b"\r\n")
        return tag, "APPEND", body

    def setup(self, script: Script, conns: list[Conn], mbox: Mbox) -> bool:
        """Bring every connection to the script's start state; False when capabilities are missing."""
        required = [c.upper() for c in script.capabilities]
        if script.state == "nonauth":
            return all(c in conns[0].capabilities for c in required)
        for conn in conns:
            self.simple(conn, f"LOGIN {_quote(self.user)} {_quote(self.password)}")
        first = conns[0]
        self.simple(first, "CAPABILITY")
        if not all(c in first.capabilities for c in required):
            return False
        mailbox = self.mailbox
        _, listed = self.simple(first, f'LIST "" {_quote(mailbox + "*")}')
        _, subscribed = self.simple(first, f'LSUB "" {_quote(mailbox + "*")}')
        names = sorted({_arg_text(r[3]) for r in listed if len(r) >= 4 and str(r[0]).upper() == "LIST"},
                       reverse=True)
        for name in names:
            self.simple(first, f"DELETE {_quote(name)}", ok=False)
        for r in subscribed:
            if len(r) >= 4 and str(r[0]).upper() == "LSUB":
                self.simple(first, f"UNSUBSCRIBE {_quote(_arg_text(r[3]))}", ok=False)
        if script.state == "auth":
            return True
        if mailbox.upper() != "INBOX":
            self.simple(first, f"CREATE {_quote(mailbox)}")
        count = script.messages
        appended = 0
        while count == -1 and not mbox.at_end or appended < count:
            tag, text, _ = self.append(first, f'{_quote(mailbox)} "{mbox.messages[mbox.next % len(mbox.messages)][1]}"',
                                       mbox)
            self._wait(first, tag, text, True)
            appended += 1
        if script.state in ("created", "appended"):
            return True
        for conn in conns:
            conn.reset_view()
            conn.selected = mailbox.upper()
            self.simple(conn, f"SELECT {_quote(mailbox)}")
        return True

    # -- command groups ---------------------------------------------------------------

    def run_group(self, script: Script, group: Group, conns: list[Conn], matcher: Matcher, mbox: Mbox) -> None:
        conn = conns[group.conn]
        if conn.closed:
            raise TestFailure(f"connection {group.conn + 1} is closed")
        matcher.seqmap = list(range(1, len(conn.uids) + 1))
        found = [False] * len(group.untagged)
        extra: Optional[str] = None
        outstanding: dict[str, Command] = {}
        names: dict[str, str] = {}
        for cmd in group.commands:
            text = matcher.expand_command(cmd.text.decode("latin-1"))
            matcher.vars["tag"] = ""
            lowered = text.lower()
            if lowered == "append" or (lowered.startswith("append ") and not _append_has_body(text[7:])):
                prefix = _quote(self.mailbox) + f' "{mbox.messages[mbox.next % len(mbox.messages)][1]}"' \
                    if lowered == "append" else text[7:]
                tag, _, _ = self.append(conn, prefix, mbox)
                names[tag] = "APPEND"
            else:
                tag = conn.next_tag()
                if lowered == "logout" or group.have_bye:
                    conn.logout_sent = True
                self._send_with_literals(conn, tag, text.encode("latin-1"))
                words = text.split()
                name = words[0].upper() if words else ""
                if name == "UID" and len(words) > 1:
                    name = "UID " + words[1].upper()
                names[tag] = name
                conn.running[tag] = name
                if name in ("SELECT", "EXAMINE"):
                    conn.reset_view()
                    conn.selected = words[1].strip('"').upper() if len(words) > 1 else ""
            outstanding[tag] = cmd
        deadline = time.monotonic() + TIMEOUT
        while outstanding:
            line = conn.read_line(deadline)
            if line is None:
                if group.have_bye and conn.seen_bye:
                    for cmd in outstanding.values():
                        if cmd.reply is not None and str(cmd.reply[0]) != "":
                            raise TestFailure("only \"\" is allowed as reply when BYE happens")
                    outstanding.clear()
                    break
                if conn.logout_sent:
                    break
                raise TestFailure("unexpected disconnection")
            args, _ = tokenize(line)
            if not args:
                continue
            head = str(args[0])
            if head == "+":
                continue
            if head == "*":
                reply = args[1:]
                matched = self._match_untagged(group, reply, found, matcher)
                if not matched and not script.ignore_extra and not conn.logout_sent and extra is None:
                    extra = render(reply)
                conn.track(reply)
                if len(reply) >= 2 and isinstance(reply[0], Atom) and str(reply[0]).isdigit() and \
                        str(reply[1]).upper() == "EXPUNGE":
                    matcher.expunged(int(str(reply[0])))
                continue
            cmd = outstanding.pop(head, None)
            if cmd is None:
                raise TestFailure(f"unexpected tagged reply {line!r}")
            conn.running.pop(head, None)
            status = str(args[1]).upper() if len(args) > 1 else ""
            expected = cmd.reply or [Atom("")]
            if status == "BAD" and str(expected[0]).lower() != "bad":
                raise TestFailure(f"BAD reply for command: {render(args)}")
            matcher.vars["tag"] = head
            if str(expected[0]) and status.lower() != str(expected[0]).lower() or \
                    len(expected) > 1 and matcher.match_args(expected[1:], args[2:], prefix=True) != -1:
                raise TestFailure(f"expected tagged reply '{render(expected)}', got '{render(args[1:])}'")
            if names.get(head) in ("SELECT", "EXAMINE") and status != "OK":
                conn.reset_view()
        missing = [u for u, f in zip(group.untagged, found) if u.existence == "*" and not f]
        if missing:
            raise TestFailure(f"missing {len(missing)} untagged replies; first: {render(missing[0].args)}")
        if extra is not None:
            raise TestFailure(f"unexpected untagged reply: {extra}")
        if group.sleep:
            time.sleep(group.sleep)

    def _match_untagged(self, group: Group, reply: list[Value], found: list[bool], matcher: Matcher) -> bool:
        """Match one untagged reply against the group's expectations; True if any matched."""
        matched = False
        prefix = bool(reply) and isinstance(reply[0], Atom) and str(reply[0]).upper() in ("OK", "NO", "BAD", "BYE")
        for i, expected in enumerate(group.untagged):
            if found[i]:
                continue
            saved = dict(matcher.vars)
            matcher.added = []
            if matcher.match_args(expected.args, reply, prefix=prefix) == -1:
                if expected.existence == "!":
                    raise TestFailure(f"unexpected untagged match: {render(expected.args)} <- {render(reply)}")
                found[i] = True
                matched = True
                if group.ordered:
                    break
                continue
            matcher.vars.clear()
            matcher.vars.update(saved)
            if group.ordered and expected.existence == "*":
                break
        return matched

    def _send_with_literals(self, conn: Conn, tag: str, text: bytes) -> None:
        """Send a command; synchronising literals wait for the server's continuation."""
        data = f"{tag} ".encode() + text + b"\r\n"
        pos = 0
        for m in re.finditer(rb"~?\{(\d+)(\+?)\}\r\n", data):
            if m.group(2):
                continue
            conn.send(data[pos:m.end()])
            pos = m.end()
            deadline = time.monotonic() + TIMEOUT
            while True:
                line = conn.read_line(deadline)
                if line is None:
                    return
                if line.startswith(b"+"):
                    break
                # a tagged refusal or an untagged reply: keep it for the reader
                conn.buf = line + conn.buf
                return
        conn.send(data[pos:])


def _append_has_body(args: str) -> bool:
    """Whether `APPEND args` already carries its message (imaptest's append_has_body)."""
    try:
        parsed, _ = tokenize(args.encode("latin-1") + b"\r\n")
    except ValueError:
        return False
    if not parsed:
        return False
    rest = parsed[1:]
    if rest and isinstance(rest[0], list):
        rest = rest[1:]
    if rest and isinstance(rest[0], Text):
        rest = rest[1:]
    return bool(rest) and (isinstance(rest[0], Text) or str(rest[0]).lower() == "catenate")


def _arg_text(value: Value) -> str:
    return "" if value is NIL else str(value)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_scripts(directory: Path) -> list[Script]:
    """Every script of a directory ([] when it is missing: the suite then fails on the count)."""
    if not directory.is_dir():
        return []
    default = directory / "default.mbox"
    return [parse_script(path, default) for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.endswith(".mbox") and not path.name.startswith(".")]
