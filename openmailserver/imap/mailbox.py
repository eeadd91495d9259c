"""The selected mailbox of an IMAP session and the commands that work on it.

`Selected` keeps the session's view of the folder: messages in sequence
order with UID, flags and modseq, loaded at SELECT from a covering index,
plus id, size, internal date and file name once a command needs them; the
view is then updated incrementally. Other sessions' work is found through
the folder's highest modseq (RFC 7162 style) plus a message count check that
reveals expunges; it is reported by `sync()` only where RFC 3501 allows:
flag changes and new messages after any command, EXPUNGE never during
FETCH, STORE or SEARCH (§7.4.1; UID variants may). Until then an expunged
message keeps its sequence number (`pending_expunge`).

Message data comes from, cheapest first: the view itself (FLAGS, UID,
RFC822.SIZE, INTERNALDATE), the `message_cache` table (ENVELOPE, BODY,
BODYSTRUCTURE, header block), the first bytes of the file (header sections),
the whole file. File reads and MIME parsing run in the executor in batches,
and what was computed is written back to the cache in the background.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..mime import structure
from ..store import accounts as store_accounts
from ..store import mailstate, maildir
from ..store.messages import get_folder
from . import protocol as p
from .search import run_search

if TYPE_CHECKING:  # pragma: no cover
    from .server import Session

SYSTEM_FLAGS = mailstate.SYSTEM_FLAG_ORDER
FETCH_BATCH = 400
FETCH_BATCH_BYTES = 4 * 1024 * 1024
LOAD_AHEAD = 2  # FETCH batches read ahead of the one being sent
INLINE_READ = 256 * 1024  # the event loop reads files up to this size...
INLINE_READ_SECONDS = 0.004  # ...for up to this long per batch
HEADER_READ = 16 * 1024
HEADER_READ_MAX = 1024 * 1024


class ImapError(Exception):
    """Ends a command with the given tagged status text, e.g. "NO [TRYCREATE] ..."."""

    def __init__(self, response: str) -> None:
        super().__init__(response)
        self.response = response


class Msg:
    """One message of the view. Details (id, size, date, file) load when first needed."""

    __slots__ = ("uid", "flags", "modseq", "recent", "id", "size", "idate", "filename", "_flagbytes", "_idate")

    def __init__(self, uid: int, flags: str, modseq: int, recent: bool) -> None:
        self.uid = uid
        self.flags = flags
        self.modseq = modseq
        self.recent = recent
        self.id: Optional[str] = None
        self.size = 0
        self.idate = ""
        self.filename = ""
        self._flagbytes: Optional[bytes] = None
        self._idate: Optional[bytes] = None

    def set_details(self, message_id: str, size: int, idate: str, filename: str) -> None:
        self.id, self.size, self.idate, self.filename = message_id, size, idate, filename

    def set_flags(self, flags: str) -> None:
        self.flags = flags
        self._flagbytes = None

    @property
    def flag_list(self) -> list[str]:
        return mailstate.split_flags(self.flags)

    def has(self, flag: str) -> bool:
        # System flags are the only flags that start with a backslash, and no
        # keyword contains one, so a substring test is exact for them.
        return flag in self.flags if flag.startswith("\\") else flag in self.flags.split(" ")

    def flag_bytes(self) -> bytes:
        if self._flagbytes is None:
            self._flagbytes = format_flags(self.flag_list, self.recent)
        return self._flagbytes

    def internal_date(self) -> bytes:
        if self._idate is None:
            self._idate = b'"' + p.imap_date(parse_iso(self.idate)).encode("ascii") + b'"'
        return self._idate


def parse_iso(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(timezone.utc)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def format_flags(flags: list[str], recent: bool = False) -> bytes:
    items = [f for f in SYSTEM_FLAGS if f in flags] + [f for f in flags if f not in SYSTEM_FLAGS]
    if recent:
        items.append("\\Recent")
    return ("(" + " ".join(items) + ")").encode("utf-8", "replace")


# What a FETCH item needs, cheapest first.
_VIEW, _DETAILS, _CACHE, _HEADER, _FULL = range(5)
# Item kinds of a compiled FETCH plan.
(K_UID, K_FLAGS, K_DATE, K_SIZE, K_ENVELOPE, K_BODY, K_BODYSTRUCTURE, K_RFC822, K_RFC822_HEADER,
 K_RFC822_TEXT, K_SECTION) = range(11)


@dataclass
class Plan:
    """A FETCH request compiled once: item kinds in order, and what data they need."""

    items: list[tuple[int, Optional[p.FetchAttribute], bytes]]
    level: int
    cache: tuple[str, ...]
    header: bool
    full: bool
    tree: bool = False  # a section inside the MIME structure: parse in the executor


def compile_plan(attrs: list[p.FetchAttribute]) -> Plan:
    items: list[tuple[int, Optional[p.FetchAttribute], bytes]] = []
    level = _VIEW
    cache: list[str] = []
    header = full = False
    for a in attrs:
        name = a.name
        if name == "UID":
            items.append((K_UID, None, b"UID "))
        elif name == "FLAGS":
            items.append((K_FLAGS, None, b"FLAGS "))
        elif name == "INTERNALDATE":
            items.append((K_DATE, None, b"INTERNALDATE "))
            level = max(level, _DETAILS)
        elif name == "RFC822.SIZE":
            items.append((K_SIZE, None, b"RFC822.SIZE "))
            level = max(level, _DETAILS)
        elif name == "ENVELOPE":
            items.append((K_ENVELOPE, None, b"ENVELOPE "))
            cache.append("envelope")
        elif name == "BODYSTRUCTURE":
            items.append((K_BODYSTRUCTURE, None, b"BODYSTRUCTURE "))
            cache.append("bodystructure")
        elif name == "BODY" and a.section is None:
            items.append((K_BODY, None, b"BODY "))
            cache.append("body")
        elif name == "RFC822":
            items.append((K_RFC822, None, b"RFC822 "))
            full = True
        elif name == "RFC822.HEADER":
            items.append((K_RFC822_HEADER, None, b"RFC822.HEADER "))
            header = True
        elif name == "RFC822.TEXT":
            items.append((K_RFC822_TEXT, None, b"RFC822.TEXT "))
            full = True
        else:
            assert a.section is not None
            items.append((K_SECTION, a, a.response_name.encode("utf-8", "replace") + b" "))
            sec = a.section
            if not sec.part and sec.specifier in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                header = True
            else:
                full = True
    if cache:
        level = max(level, _CACHE)
    if header:
        level = max(level, _HEADER)
    if full:
        level = _FULL
    cols = tuple(dict.fromkeys(cache))
    if header and not full:
        cols += ("header",)
    tree = any(a is not None and a.section is not None and (a.section.part or a.section.specifier == "MIME")
               for _, a, _ in items)
    return Plan(items, level, cols, header and not full, full, tree)


class FileFinder:
    """Reads message files, also when their name changed since the view learnt it (flags renamed).

    Several threads may read through one finder at once (a FETCH loads batches ahead).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.locator = maildir.Locator(folder)
        self.dir_fd: Optional[int] = None
        self.lock = threading.Lock()

    def _fd(self) -> int:
        if self.dir_fd is None:
            with self.lock:
                if self.dir_fd is None:
                    self.dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        return self.dir_fd

    def close(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def _open_fd(self, filename: str) -> tuple[Optional[int], str]:
        """The file open for reading and its current name; None if it is gone."""
        try:  # the common case, without a closure
            return os.open(filename, os.O_RDONLY, dir_fd=self._fd()), filename
        except FileNotFoundError:
            pass
        opened: list[tuple[int, str]] = []
        if self.locator.apply(filename, lambda name: opened.append(
                (os.open(name, os.O_RDONLY, dir_fd=self._fd()), name))):
            return opened[0]
        return None, filename

    def read(self, filename: str, size: int = 0) -> tuple[Optional[bytes], str]:
        """The whole file (None if gone) and its current name."""
        fd, current = self._open_fd(filename)
        if fd is None:
            return None, current
        try:
            want = max(size, 0) + 1
            data = os.read(fd, want)
            if len(data) < want:  # a short read of a regular file: that was all of it
                return data, current
            chunks = [data]
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks), current
        finally:
            os.close(fd)

    def head(self, filename: str) -> tuple[Optional[bytes], str]:
        """The header block of a file (None if gone) and its current name."""
        fd, current = self._open_fd(filename)
        if fd is None:
            return None, current
        try:
            data = os.read(fd, HEADER_READ)
            while True:
                n = structure.header_length(data)
                if n < len(data) or len(data) >= HEADER_READ_MAX:
                    return data[:n], current
                more = os.read(fd, HEADER_READ)
                if not more:
                    return data, current
                data += more
        finally:
            os.close(fd)


def load_batch(db, folder_id: int, finder: FileFinder, uids: list[int], plan: Plan,
               known: Optional[list[tuple]] = None, deadline: Optional[float] = None
               ) -> tuple[dict[int, tuple], dict[int, dict], list[tuple[str, dict]], list[tuple]]:
    """Message data for one FETCH batch, in the executor (or, with a deadline, on the loop).

    Returns details by UID (id, size, date, file; messages expunged meanwhile
    are absent), computed data by UID, new cache entries, and the rows left to do.
    `known`: the view's own detail rows for these UIDs, when it has them all and
    the plan needs no cached column; the index is then not read (a file that is
    gone reads as expunged). With a `deadline` (a `time.perf_counter()` value:
    the event loop is the caller), reading stops at a file over `INLINE_READ`
    bytes or once the deadline has passed, and the rest of the rows are returned.
    """
    rows = known if known is not None else db.read(mailstate.message_details_for, folder_id, uids, plan.cache)
    details: dict[int, tuple] = {}
    data: dict[int, dict] = {}
    entries: list[tuple[str, dict]] = []
    ncache = len(plan.cache)
    for k, row in enumerate(rows):
        if deadline is not None and plan.level >= _CACHE and (row[2] > INLINE_READ or time.perf_counter() > deadline):
            return details, data, entries, rows[k:]
        uid = row[0]
        details[uid] = row[1:5]
        if plan.level < _CACHE:
            continue
        out: dict[str, Any] = {}
        missing: list[str] = []
        for name, value in zip(plan.cache, row[5:5 + ncache]):
            if value is None:
                missing.append(name)
            else:
                out[name] = value
        need_full = plan.full or "body" in missing or "bodystructure" in missing
        need_head = not need_full and bool(missing)
        if need_full or need_head:
            filename = row[4]
            if need_full:
                raw, current = finder.read(filename, row[2])
            else:
                raw, current = finder.head(filename)
            if raw is None:
                continue  # expunged meanwhile
            if current != filename:
                details[uid] = (row[1], row[2], row[3], current)
            new: dict[str, bytes] = {}
            if need_full:
                out["full"] = raw
                header = raw[:structure.header_length(raw)] if missing else b""
            else:
                header = raw
            if "header" in missing:
                out["header"] = new["header"] = header
                # The header is at hand: cache its ENVELOPE too, it costs little.
                new["envelope"] = structure.envelope_bytes(header)
            if "envelope" in missing:
                out["envelope"] = new["envelope"] = structure.envelope_bytes(header)
                new["header"] = header
            if plan.tree or "body" in missing or "bodystructure" in missing:
                tree = structure.parse(raw)
                out["tree"] = tree
                if "body" in missing or "bodystructure" in missing:
                    out["body"] = new["body"] = structure.encode(structure.bodystructure(tree, False))
                    out["bodystructure"] = new["bodystructure"] = \
                        structure.encode(structure.bodystructure(tree, True))
            if new:
                entries.append((row[1], new))
        data[uid] = out
    return details, data, entries, []


def _section_value(a: p.FetchAttribute, data: dict) -> Optional[bytes]:
    sec = a.section
    assert sec is not None
    full = data.get("full")
    if full is None:
        header = data["header"]
        if sec.specifier == "HEADER":
            value: Optional[bytes] = header
        else:
            value = structure.select_fields(header, sec.headers, exclude=sec.specifier == "HEADER.FIELDS.NOT")
    elif not sec.part and sec.specifier is None:
        value = full
    elif not sec.part and sec.specifier == "TEXT":
        value = full[structure.header_length(full):]
    elif not sec.part and sec.specifier == "HEADER":
        value = full[:structure.header_length(full)]
    else:
        tree = data.get("tree")
        if tree is None:
            tree = data["tree"] = structure.parse(full)
        value = structure.section(tree, sec.part, sec.specifier, sec.headers)
    if value is not None and a.partial is not None:
        start, count = a.partial
        value = value[start:start + count]
    return value


class Selected:
    """One session's view of its selected folder."""

    def __init__(self, session: "Session", folder: dict, readonly: bool) -> None:
        self.folder = folder
        self.readonly = readonly
        self.path: Path = session.folder_path(folder["name"])
        self.msgs: list[Msg] = []
        self.uids: list[int] = []
        self.pending_expunge: set[int] = set()
        self.known_modseq = folder["highestmodseq"]
        self.keywords: list[str] = mailstate.split_flags(folder.get("keywords", ""))
        self.dirty = False
        # Changes read in the transaction of this session's own write (APPEND), so that
        # the next `sync` need not read them again.
        self.prefetched: Optional[dict] = None
        self.dead = False
        self.claimed_recent = False
        self.recent_count = 0
        self.key = (folder["id"], folder["uidvalidity"])

    # -- opening and closing ------------------------------------------------------

    @classmethod
    async def open(cls, session: "Session", folder: dict, readonly: bool) -> Optional["Selected"]:
        folder, rows = await session.rt.adb.read(mailstate.load_messages, folder["id"])
        if folder is None:
            return None
        self = cls(session, folder, readonly)
        shared = session.shared
        first = shared.first_recent.setdefault(self.key, folder["first_recent_uid"])
        self.msgs = [Msg(uid, flags, modseq, uid >= first) for uid, flags, modseq in rows]
        self.uids = [m.uid for m in self.msgs]
        if not readonly:
            claim = max(folder["uidnext"], first)
            if claim > first:
                shared.first_recent[self.key] = claim
                await session.rt.adb.write(mailstate.set_first_recent_uid, folder["id"], claim)
        seen = {k.lower() for k in self.keywords}
        for flags in {m.flags for m in self.msgs}:  # few distinct flag combinations
            for f in mailstate.split_flags(flags):
                if not f.startswith("\\") and f.lower() not in seen:
                    self.keywords.append(f)
                    seen.add(f.lower())
        return self

    def greet(self, session: "Session") -> None:
        """The untagged part of the SELECT/EXAMINE response (RFC 3501 §6.3.1)."""
        session.untagged(b"FLAGS " + self.flags_list())
        session.untagged(f"{len(self.msgs)} EXISTS")
        self.recent_count = sum(1 for m in self.msgs if m.recent)
        session.untagged(f"{self.recent_count} RECENT")
        first_unseen = next((i for i, m in enumerate(self.msgs, 1) if not m.has("\\Seen")), None)
        if first_unseen is not None:
            session.untagged(f"OK [UNSEEN {first_unseen}] First unseen")
        session.untagged(f"OK [UIDVALIDITY {self.folder['uidvalidity']}] UIDs valid")
        session.untagged(f"OK [UIDNEXT {self.folder['uidnext']}] Predicted next UID")
        if self.readonly:
            session.untagged("OK [PERMANENTFLAGS ()] Read-only mailbox")
        else:
            session.untagged(b"OK [PERMANENTFLAGS " + self.permanent_flags() + b"] Flags permitted")

    def flags_list(self) -> bytes:
        return ("(" + " ".join([*SYSTEM_FLAGS, *self.keywords]) + ")").encode("utf-8", "replace")

    def permanent_flags(self) -> bytes:
        return ("(" + " ".join([*SYSTEM_FLAGS, *self.keywords, "\\*"]) + ")").encode("utf-8", "replace")

    async def close(self, session: "Session") -> None:
        if self.claimed_recent and not self.dead:
            first = session.shared.first_recent.get(self.key)
            if first is not None:
                await session.rt.adb.write(mailstate.set_first_recent_uid, self.folder["id"], first)

    def concerns(self, event: dict, session: "Session") -> bool:
        if event.get("origin") == session.id:
            return False
        if event.get("folder_id") is not None:
            return event["folder_id"] == self.folder["id"]
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        folder = payload.get("folder", event.get("folder"))
        return folder is None or folder == self.folder["name"]

    # -- keeping the view current -------------------------------------------------

    def index_of(self, uid: int) -> Optional[int]:
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i
        return None

    async def sync(self, session: "Session", allow_expunge: bool) -> None:
        """Learn what other sessions and deliveries changed; report what RFC 3501 allows now."""
        self.dirty = False
        rt = session.rt
        changes, self.prefetched = self.prefetched, None
        if not self.dead:
            if changes is None or changes["folder"] is None or changes["folder"]["highestmodseq"] <= self.known_modseq:
                changes = await rt.adb.read(mailstate.changes_since, self.folder["id"], self.known_modseq)
            if changes["folder"] is None or changes["folder"]["uidvalidity"] != self.folder["uidvalidity"]:
                self.dead = True  # deleted (and maybe recreated) by another session
                self.pending_expunge.update(self.uids)
            else:
                if changes["folder"]["name"] != self.folder["name"]:  # renamed by another session
                    self.folder = {**self.folder, "name": changes["folder"]["name"]}
                    self.path = session.folder_path(self.folder["name"])
                self._apply(session, changes)
                expected = len(self.msgs) - len(self.pending_expunge)
                if changes["count"] != expected:
                    present = set(await rt.adb.read(mailstate.folder_uids, self.folder["id"]))
                    self.pending_expunge.update(u for u in self.uids if u not in present)
        if allow_expunge and self.pending_expunge:
            self._report_expunges(session, self.pending_expunge)
            self.pending_expunge = set()

    def _apply(self, session: "Session", changes: dict) -> None:
        folder = changes["folder"]
        updated: list[int] = []
        new_rows = []
        last = self.uids[-1] if self.uids else 0
        keywords_grew = False
        seen_kw = {k.lower() for k in self.keywords}
        for row in changes["rows"]:
            uid = row[0]
            i = self.index_of(uid)
            if i is not None:
                msg = self.msgs[i]
                msg.modseq = row[3]
                msg.set_details(row[1], row[4], row[5], row[6])
                if msg.flags != row[2] and uid not in self.pending_expunge:
                    msg.set_flags(row[2])
                    updated.append(i)
            elif uid > last:
                new_rows.append(row)
            for f in mailstate.split_flags(row[2]):
                if not f.startswith("\\") and f.lower() not in seen_kw:
                    self.keywords.append(f)
                    seen_kw.add(f.lower())
                    keywords_grew = True
        for kw in mailstate.split_flags(folder.get("keywords", "")):
            if kw.lower() not in seen_kw:
                self.keywords.append(kw)
                seen_kw.add(kw.lower())
                keywords_grew = True
        self.known_modseq = max(self.known_modseq, folder["highestmodseq"])
        self.folder = {**self.folder, **{k: folder[k] for k in ("uidnext", "highestmodseq", "keywords")}}
        if keywords_grew:
            session.untagged(b"FLAGS " + self.flags_list())
            if not self.readonly:
                session.untagged(b"OK [PERMANENTFLAGS " + self.permanent_flags() + b"] Flags permitted")
        for i in updated:
            msg = self.msgs[i]
            session.untagged(b"%d FETCH (FLAGS %s)" % (i + 1, msg.flag_bytes()))
        if new_rows:
            shared = session.shared
            first = shared.first_recent.setdefault(self.key, folder["first_recent_uid"])
            for row in new_rows:
                msg = Msg(row[0], row[2], row[3], row[0] >= first)
                msg.set_details(row[1], row[4], row[5], row[6])
                self.msgs.append(msg)
                self.uids.append(row[0])
                self.recent_count += msg.recent
            if not self.readonly and new_rows[-1][0] + 1 > first:
                shared.first_recent[self.key] = new_rows[-1][0] + 1
                self.claimed_recent = True
            session.untagged(f"{len(self.msgs)} EXISTS")
            session.untagged(f"{self.recent_count} RECENT")

    async def load_details(self, session: "Session", msgs: list[Msg]) -> None:
        """Load id, size, date and file name of messages that lack them (one query per span)."""
        todo = sorted(m.uid for m in msgs if m.id is None)
        if not todo:
            return
        rows = await session.rt.adb.read(mailstate.message_details_for, self.folder["id"], todo)
        for row in rows:
            i = self.index_of(row[0])
            if i is not None:
                self.msgs[i].set_details(*row[1:5])

    def _report_expunges(self, session: "Session", uids: set[int]) -> None:
        """EXPUNGE responses, highest sequence number first, and drop them from the view."""
        for i in range(len(self.msgs) - 1, -1, -1):
            if self.msgs[i].uid in uids:
                session.untagged(f"{i + 1} EXPUNGE")
        self.msgs = [m for m in self.msgs if m.uid not in uids]
        self.uids = [m.uid for m in self.msgs]
        self.recent_count = sum(1 for m in self.msgs if m.recent)

    # -- sequence sets ------------------------------------------------------------

    def resolve(self, seqset: p.SequenceSet, uid: bool) -> list[int]:
        """Indexes into `msgs` named by a sequence set (or UID set)."""
        if uid:
            largest = self.uids[-1] if self.uids else 0
            out: list[int] = []
            for lo, hi in seqset.intervals(largest):
                start = bisect.bisect_left(self.uids, lo)
                end = bisect.bisect_right(self.uids, hi)
                out.extend(range(start, end))
            return out
        count = len(self.msgs)
        if seqset.exceeds(count):
            raise ImapError("BAD Invalid message sequence number")
        return [n - 1 for lo, hi in seqset.intervals(count) for n in range(lo, hi + 1)]

    # -- commands -----------------------------------------------------------------

    async def command(self, session: "Session", cmd: p.Command) -> str:
        if self.dirty and cmd.name in ("FETCH", "STORE", "SEARCH", "COPY", "MOVE"):
            # The command's numbers refer to the current view: never expunge before it runs.
            await self.sync(session, allow_expunge=False)
        name = cmd.name
        if name == "CHECK":
            return "OK Check completed"
        if name == "FETCH":
            return await self.fetch(session, cmd.args, cmd.uid)  # type: ignore[arg-type]
        if name == "STORE":
            return await self.store(session, cmd.args, cmd.uid)  # type: ignore[arg-type]
        if name == "SEARCH":
            return await self.search(session, cmd.args, cmd.uid)  # type: ignore[arg-type]
        if name == "EXPUNGE":
            if self.readonly:
                return "NO [READ-ONLY] Mailbox is read-only"
            uids = None
            if cmd.uid:
                uids = [self.msgs[i].uid for i in self.resolve(cmd.args.sequence_set, True)]  # type: ignore[union-attr]
            await self.expunge(session, silent=False, uids=uids)
            return "OK Expunge completed"
        if name == "COPY":
            return await self.copy(session, cmd.args, cmd.uid)  # type: ignore[arg-type]
        if name == "MOVE":
            return await self.move(session, cmd.args, cmd.uid)  # type: ignore[arg-type]
        raise ImapError("BAD Unknown command")

    async def expunge(self, session: "Session", silent: bool, uids: Optional[list[int]] = None) -> None:
        """EXPUNGE / UID EXPUNGE (RFC 4315 §2.1) / the implicit one of CLOSE."""
        if self.dead:
            return
        known = [m.uid for m in self.msgs if m.uid not in self.pending_expunge] if uids is None else uids
        if not known:
            return
        assert session.mailbox is not None
        gone = await session.rt.adb.write(mailstate.expunge, session.mailbox["id"], self.folder["id"], self.path,
                                          known)
        if gone:
            session.publish(self.folder)
            if silent:
                doomed = set(gone)
                self.msgs = [m for m in self.msgs if m.uid not in doomed]
                self.uids = [m.uid for m in self.msgs]
                self.recent_count = sum(1 for m in self.msgs if m.recent)
            else:
                self.pending_expunge.update(gone)

    # FETCH (RFC 3501 §6.4.5) --------------------------------------------------------

    async def fetch(self, session: "Session", args: p.FetchArgs, uid: bool) -> str:
        indexes = self.resolve(args.sequence_set, uid)
        attrs = list(args.attributes)
        if uid and not any(a.name == "UID" for a in attrs):
            attrs.insert(0, p.FetchAttribute("UID"))
        seen_set: set[int] = set()
        if not self.readonly and any(a.sets_seen for a in attrs):
            unseen = [self.msgs[i].uid for i in indexes
                      if not self.msgs[i].has("\\Seen") and self.msgs[i].uid not in self.pending_expunge]
            if unseen:
                await self._store(session, unseen, "add", ["\\Seen"])
                seen_set = set(unseen)
        plan = compile_plan(attrs)
        # RFC 3501 §6.4.5: a FETCH that sets \Seen reports the new flags.
        if seen_set and not any(kind == K_FLAGS for kind, _, _ in plan.items):
            plan.items.append((K_FLAGS, None, b"FLAGS "))
            only_seen: Optional[set[int]] = seen_set
        else:
            only_seen = None
        if plan.level == _VIEW:
            for i in indexes:
                self._fetch_chunks(session, i, self.msgs[i], plan, None, only_seen)
                if session.out_size > 256 * 1024:
                    await session.flush()
            return "OK Fetch completed"
        rt = session.rt
        finder = FileFinder(self.path)
        entries: list[tuple[str, dict]] = []
        missing = 0
        batches = self._batches(indexes, plan)
        # The next batches load (`_load`) while one is formatted and sent.
        pending: deque[asyncio.Future] = deque()
        ahead = iter(batches)
        try:
            for batch in batches:
                for following in ahead:
                    pending.append(asyncio.ensure_future(self._load(rt, finder, following, plan)))
                    if len(pending) > LOAD_AHEAD:
                        break
                details, data, new, _ = await pending.popleft()
                entries.extend(new)
                for i in batch:
                    msg = self.msgs[i]
                    d = details.get(msg.uid)
                    if d is not None:
                        if msg.id is None or msg.filename != d[3]:
                            msg.set_details(*d)
                    elif msg.id is None:
                        missing += 1  # expunged meanwhile, and never seen here
                        continue
                    item = data.get(msg.uid)
                    if plan.level >= _CACHE and item is None:
                        missing += 1
                        continue
                    self._fetch_chunks(session, i, msg, plan, item, only_seen)
                await session.flush()
        finally:
            for future in pending:
                with contextlib.suppress(Exception):
                    await future
            finder.close()
        if entries:
            session.shared.spawn(rt.adb.write(mailstate.cache_put, entries))
        if missing:
            return "NO [EXPUNGEISSUED] Some messages were expunged meanwhile"
        return "OK Fetch completed"

    def _batches(self, indexes: list[int], plan: Plan) -> list[list[int]]:
        """Split a FETCH into batches: by count and, when whole messages are read, by bytes."""
        limit = FETCH_BATCH if plan.full else FETCH_BATCH * 10
        batches: list[list[int]] = []
        batch: list[int] = []
        size = 0
        for i in indexes:
            batch.append(i)
            if plan.full:
                size += self.msgs[i].size or 4096
            if len(batch) >= limit or size >= FETCH_BATCH_BYTES:
                batches.append(batch)
                batch, size = [], 0
        if batch:
            batches.append(batch)
        return batches

    async def _load(self, rt, finder: FileFinder, batch: list[int], plan: Plan):
        msgs = [self.msgs[i] for i in batch]
        if plan.cache or any(m.id is None for m in msgs):
            uids = sorted(m.uid for m in msgs)
            return await rt.run(load_batch, rt.db, self.folder["id"], finder, uids, plan)
        # Files in the page cache are read here: cheaper than a trip to a thread and its GIL
        # handoff at every system call. The loop reads for a bounded time and leaves the rest
        # (files not cached, large ones) to the executor.
        known = [(m.uid, m.id, m.size, m.idate, m.filename) for m in msgs]
        uids = [m.uid for m in msgs]
        details, data, entries, rest = load_batch(rt.db, self.folder["id"], finder, uids, plan, known,
                                                  time.perf_counter() + INLINE_READ_SECONDS)
        if rest:
            more = await rt.run(load_batch, rt.db, self.folder["id"], finder, [r[0] for r in rest], plan, rest)
            details.update(more[0])
            data.update(more[1])
            entries.extend(more[2])
        return details, data, entries, []

    def _fetch_chunks(self, session: "Session", i: int, msg: Msg, plan: Plan, data: Optional[dict],
                      only: Optional[set[int]]) -> None:
        """Send one FETCH response; literal data goes out as its own chunk, never copied."""
        head: list[bytes] = []
        opened = False  # a literal was sent: the response line is under way
        for kind, a, label in plan.items:
            literal: Optional[bytes] = None
            if kind == K_UID:
                head.append(b"UID %d" % msg.uid)
                continue
            if kind == K_FLAGS:
                if only is None or msg.uid in only:
                    head.append(label + msg.flag_bytes())
                continue
            if kind == K_DATE:
                head.append(label + msg.internal_date())
                continue
            if kind == K_SIZE:
                head.append(b"RFC822.SIZE %d" % msg.size)
                continue
            assert data is not None
            if kind == K_ENVELOPE:
                head.append(label + data["envelope"])
                continue
            if kind == K_BODYSTRUCTURE:
                head.append(label + data["bodystructure"])
                continue
            if kind == K_BODY:
                head.append(label + data["body"])
                continue
            if kind == K_RFC822:
                literal = data["full"]
            elif kind == K_RFC822_HEADER:
                literal = data.get("header")
                if literal is None:
                    literal = data["full"][:structure.header_length(data["full"])]
            elif kind == K_RFC822_TEXT:
                full = data["full"]
                literal = full[structure.header_length(full):]
            else:
                assert a is not None
                literal = _section_value(a, data)
                if literal is None:
                    head.append(label + b"NIL")
                    continue
            head.append(label + b"{%d}\r\n" % len(literal))
            session.send((b" " if opened else b"* %d FETCH (" % (i + 1)) + b" ".join(head))
            session.send(literal)
            opened = True
            head = []
        if opened:
            session.send((b" " + b" ".join(head) if head else b"") + b")\r\n")
        else:
            session.send(b"* %d FETCH (" % (i + 1) + b" ".join(head) + b")\r\n")

    # STORE (RFC 3501 §6.4.6) --------------------------------------------------------

    def canonical_keywords(self, flags: tuple[str, ...] | list[str]) -> list[str]:
        """Keywords are case-insensitive: reuse the spelling the folder already knows."""
        known = {k.lower(): k for k in self.keywords}
        return [f if f.startswith("\\") else known.get(f.lower(), f) for f in flags]

    async def _store(self, session: "Session", uids: list[int], mode: mailstate.StoreMode,
                     flags: list[str]) -> list[tuple[int, str, int, str]]:
        # The files are renamed later (`store.renames`); the index is the authority for
        # flags meanwhile (and after a crash).
        result = await session.rt.adb.write(mailstate.store_flags, self.folder["id"], self.path, uids, mode, flags,
                                            session.rt.renames.queue)
        for uid, text, modseq, filename in result["rows"]:
            i = self.index_of(uid)
            if i is not None:
                msg = self.msgs[i]
                msg.set_flags(text)
                if msg.id is not None:
                    msg.filename = filename
        if result["keywords"]:
            seen = {k.lower() for k in self.keywords}
            added = [k for k in result["keywords"] if k.lower() not in seen]
            if added:
                self.keywords.extend(added)
                session.untagged(b"FLAGS " + self.flags_list())
                session.untagged(b"OK [PERMANENTFLAGS " + self.permanent_flags() + b"] Flags permitted")
        if result["modseq"] is not None:
            if result["modseq"] == self.known_modseq + 1:
                # Nothing else changed since this view last looked: it knows every change up
                # to its own, and its next sync need not read back the rows it just wrote.
                self.known_modseq = result["modseq"]
            session.publish(self.folder)
        return result["rows"]

    async def store(self, session: "Session", args: p.StoreArgs, uid: bool) -> str:
        """STORE; like Dovecot, report only flags that are not what the client can assume.

        Without .SILENT that is every message whose flags changed from what this
        session knew; with .SILENT only those where another session's change
        made the result differ from what the client computed itself.
        """
        indexes = self.resolve(args.sequence_set, uid)
        if self.readonly:
            return "NO [READ-ONLY] Mailbox is read-only"
        targets = [self.msgs[i] for i in indexes if self.msgs[i].uid not in self.pending_expunge]
        if not targets:
            return "OK Store completed"
        flags = self.canonical_keywords(args.flags)
        before = {m.uid: m.flags for m in targets}
        await self._store(session, [m.uid for m in targets], args.operation, flags)
        wanted = set(flags)
        expected_cache: dict[str, str] = {}
        for msg in targets:
            old = before[msg.uid]
            if args.silent:
                expected = expected_cache.get(old)
                if expected is None:
                    current = set(mailstate.split_flags(old))
                    result = wanted if args.operation == "replace" else (
                        current | wanted if args.operation == "add" else current - wanted)
                    expected = expected_cache[old] = mailstate.join_flags(result)
                if msg.flags == expected:
                    continue
            elif msg.flags == old:
                continue
            i = self.index_of(msg.uid)
            if i is None:
                continue
            if uid:
                session.send(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (i + 1, msg.uid, msg.flag_bytes()))
            else:
                session.send(b"* %d FETCH (FLAGS %s)\r\n" % (i + 1, msg.flag_bytes()))
            if session.out_size > 256 * 1024:
                await session.flush()
        return "OK Store completed"

    # SEARCH (RFC 3501 §6.4.4) -------------------------------------------------------

    async def search(self, session: "Session", args: p.SearchArgs, uid: bool) -> str:
        rt = session.rt
        result, entries = await rt.run(run_search, rt.db, self.folder["id"], FileFinder(self.path), list(self.msgs),
                                       args.criteria)
        if entries:
            session.shared.spawn(rt.adb.write(mailstate.cache_put, entries))
        numbers = [self.msgs[i].uid if uid else i + 1 for i in result]
        session.send(b"* SEARCH" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
        return "OK Search completed"

    # COPY / MOVE (RFC 3501 §6.4.7, RFC 6851, RFC 4315 COPYUID) ---------------------------

    async def _destination(self, session: "Session", name: str) -> dict:
        assert session.mailbox is not None
        folder = await session.rt.adb.read(get_folder, session.mailbox["id"], name)
        if folder is None:
            raise ImapError("NO [TRYCREATE] Mailbox does not exist")
        return folder

    async def copy(self, session: "Session", args: p.CopyArgs, uid: bool) -> str:
        indexes = self.resolve(args.sequence_set, uid)
        dest = await self._destination(session, args.mailbox)
        msgs = [self.msgs[i] for i in indexes if self.msgs[i].uid not in self.pending_expunge]
        if not msgs:
            return "OK Copy completed" if uid else "OK Copy completed (no messages)"
        rt = session.rt
        await self.load_details(session, msgs)
        msgs = [m for m in msgs if m.id is not None]
        assert session.mailbox is not None
        mailbox = await rt.adb.read(store_accounts.get_mailbox_by_id, session.mailbox["id"])
        if mailbox and mailbox["quota_bytes"] and \
                mailbox["used_bytes"] + sum(m.size for m in msgs) > mailbox["quota_bytes"]:
            return "NO [OVERQUOTA] Quota exceeded"
        dest_path = session.folder_path(dest["name"])
        links = await rt.run(_link_files, self.path, dest_path, [(m.filename, m.size) for m in msgs])
        items = [(m.uid, link) for m, link in zip(msgs, links) if link is not None]
        assert session.mailbox is not None
        try:
            result = await rt.adb.write(mailstate.copy_messages, session.mailbox["id"], self.folder["id"],
                                        dest["id"], items)
        except Exception:
            await rt.run(_unlink_all, dest_path, [link for _, link in items])
            raise
        copied = {src for src, _ in result["pairs"]}
        stale = [link for src, link in items if src not in copied]
        if stale:
            await rt.run(_unlink_all, dest_path, stale)
        if not result["pairs"]:
            return "NO [EXPUNGEISSUED] The messages were expunged meanwhile"
        session.publish(dest)
        if dest["id"] == self.folder["id"]:
            self.dirty = True
        src_set = p.format_sequence_set(s for s, _ in result["pairs"])
        dst_set = p.format_sequence_set(d for _, d in result["pairs"])
        return f"OK [COPYUID {result['uidvalidity']} {src_set} {dst_set}] Copy completed"

    async def move(self, session: "Session", args: p.CopyArgs, uid: bool) -> str:
        indexes = self.resolve(args.sequence_set, uid)
        if self.readonly:
            return "NO [READ-ONLY] Mailbox is read-only"
        dest = await self._destination(session, args.mailbox)
        uids = [self.msgs[i].uid for i in indexes if self.msgs[i].uid not in self.pending_expunge]
        if not uids:
            return "OK Move completed"
        rt = session.rt
        dest_path = session.folder_path(dest["name"])
        result = await rt.adb.write(mailstate.move_messages, self.folder["id"], self.path, dest["id"], dest_path,
                                    uids)
        if dest_path != self.path:
            await rt.run(_fsync_dirs, [dest_path / "cur", dest_path / "new"])
        pairs = result["pairs"]
        if pairs:
            src_set = p.format_sequence_set(s for s, _ in pairs)
            dst_set = p.format_sequence_set(d for _, d in pairs)
            # RFC 6851 §4.3: COPYUID in an untagged OK before the expunges.
            session.untagged(f"OK [COPYUID {result['uidvalidity']} {src_set} {dst_set}] Moved")
            self._report_expunges(session, {s for s, _ in pairs})
            session.publish(self.folder)
            session.publish(dest)
            if dest["id"] == self.folder["id"]:
                self.dirty = True
        return "OK Move completed"


def _link_files(src: Path, dst: Path, files: list[tuple[str, int]]) -> list[Optional[str]]:
    """Hard-link (or copy) message files into another folder; returns their new names there."""
    finder = FileFinder(src)
    out: list[Optional[str]] = []
    try:
        for filename, size in files:
            fd, current = finder._open_fd(filename)
            if fd is None:
                out.append(None)
                continue
            # The flags of the name the index gives, which a pending rename may not have yet.
            sub, _, name = filename.partition("/")
            info = name.partition(":2,")[2]
            new_name = f"{sub}/{maildir.unique_name(size)}" + (f":2,{info}" if sub == "cur" else "")
            try:
                try:
                    os.link(src / current, dst / new_name)
                except OSError:  # no hard links here (another file system, or not allowed)
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        _write_copy(dst, dst / new_name, fh.read())
            finally:
                os.close(fd)
            out.append(new_name)
    finally:
        finder.close()
    _fsync_dirs([dst / "cur", dst / "new"])
    return out


def _write_copy(folder: Path, final: Path, data: bytes) -> None:
    tmp = folder / "tmp" / final.name.split(":2,", 1)[0]
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, final)


def _unlink_all(folder: Path, names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(folder / name)
        except FileNotFoundError:
            pass


def _fsync_dirs(paths: list[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
