"""The selected state of an IMAP session: its view of the folder (`Selected`), kept current.

`Selected` keeps the session's view of the folder: messages in sequence
order with UID, flags and modseq, loaded at SELECT from a covering index,
plus id, size, internal date and file name once a command needs them; the
view is then updated incrementally. Other sessions' work is found through
the folder's highest modseq (RFC 7162 style) plus a message count check that
reveals expunges; it is reported by `sync()` only where RFC 3501 allows:
flag changes and new messages after any command, EXPUNGE never during
FETCH, STORE or SEARCH (§7.4.1; UID variants may). Until then an expunged
message keeps its sequence number (`pending_expunge`).

The commands that work on the view live in their own modules: FETCH in
`imap.fetch`, STORE in `imap.flags`, SEARCH in `imap.search`, COPY and MOVE in
`imap.copy`; `imap.selection` routes them. Here is what they share: sequence
sets, keywords, loading message details, and EXPUNGE, also CLOSE's implicit one.
`Selected` uses its session only through `context.Context`.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Optional

from ..store import mailstate
from . import protocol as p
from .context import Context
from .errors import ImapError
from .message import SYSTEM_FLAGS, Msg


class Selected:
    """One session's view of its selected folder."""

    def __init__(self, ctx: Context, folder: dict, readonly: bool) -> None:
        self.folder = folder
        self.readonly = readonly
        self.path: Path = ctx.folder_path(folder["name"])
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
        self.recent_count = 0
        # A read-write session has claimed \Recent for the UIDs below this one (RFC 3501 §2.3.2).
        self.claimed_to = folder["uidnext"]

    # -- opening and closing ------------------------------------------------------

    @classmethod
    async def open(cls, ctx: Context, folder: dict, readonly: bool) -> Optional["Selected"]:
        folder, rows = await ctx.adb.read(mailstate.load_messages, folder["id"])
        if folder is None:
            return None
        self = cls(ctx, folder, readonly)
        # EXAMINE shows \Recent without taking it from the next session (RFC 3501 §6.3.2).
        first = folder["first_recent_uid"] if readonly else \
            await ctx.adb.write(mailstate.claim_recent, folder["id"], folder["uidnext"])
        self.msgs = [Msg(uid, flags, modseq, uid >= first) for uid, flags, modseq in rows]
        self.uids = [m.uid for m in self.msgs]
        seen = {k.lower() for k in self.keywords}
        for flags in {m.flags for m in self.msgs}:  # few distinct flag combinations
            for f in mailstate.split_flags(flags):
                if not f.startswith("\\") and f.lower() not in seen:
                    self.keywords.append(f)
                    seen.add(f.lower())
        return self

    def greet(self, ctx: Context) -> None:
        """The untagged part of the SELECT/EXAMINE response (RFC 3501 §6.3.1)."""
        ctx.untagged(b"FLAGS " + self.flags_list())
        ctx.untagged(f"{len(self.msgs)} EXISTS")
        self.recent_count = sum(1 for m in self.msgs if m.recent)
        ctx.untagged(f"{self.recent_count} RECENT")
        first_unseen = next((i for i, m in enumerate(self.msgs, 1) if not m.has("\\Seen")), None)
        if first_unseen is not None:
            ctx.untagged(f"OK [UNSEEN {first_unseen}] First unseen")
        ctx.untagged(f"OK [UIDVALIDITY {self.folder['uidvalidity']}] UIDs valid")
        ctx.untagged(f"OK [UIDNEXT {self.folder['uidnext']}] Predicted next UID")
        if self.readonly:
            ctx.untagged("OK [PERMANENTFLAGS ()] Read-only mailbox")
        else:
            ctx.untagged(b"OK [PERMANENTFLAGS " + self.permanent_flags() + b"] Flags permitted")

    def flags_list(self) -> bytes:
        return ("(" + " ".join([*SYSTEM_FLAGS, *self.keywords]) + ")").encode("utf-8", "replace")

    def permanent_flags(self) -> bytes:
        return ("(" + " ".join([*SYSTEM_FLAGS, *self.keywords, "\\*"]) + ")").encode("utf-8", "replace")

    def canonical_keywords(self, flags: tuple[str, ...] | list[str]) -> list[str]:
        """Keywords are case-insensitive: reuse the spelling the folder already knows."""
        known = {k.lower(): k for k in self.keywords}
        return [f if f.startswith("\\") else known.get(f.lower(), f) for f in flags]

    def concerns(self, event: dict, ctx: Context) -> bool:
        if event.get("origin") == ctx.id:
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

    async def sync(self, ctx: Context, allow_expunge: bool) -> None:
        """Learn what other sessions and deliveries changed; report what RFC 3501 allows now."""
        self.dirty = False
        changes, self.prefetched = self.prefetched, None
        if not self.dead:
            if changes is None or changes["folder"] is None or changes["folder"]["highestmodseq"] <= self.known_modseq:
                changes = await ctx.adb.read(mailstate.changes_since, self.folder["id"], self.known_modseq)
            if changes["folder"] is None or changes["folder"]["uidvalidity"] != self.folder["uidvalidity"]:
                self.dead = True  # deleted (and maybe recreated) by another session
                self.pending_expunge.update(self.uids)
            else:
                if changes["folder"]["name"] != self.folder["name"]:  # renamed by another session
                    self.folder = {**self.folder, "name": changes["folder"]["name"]}
                    self.path = ctx.folder_path(self.folder["name"])
                recent_from = changes["folder"]["first_recent_uid"] if self.readonly else \
                    await self._claim_recent(ctx, changes)
                self._apply(ctx, changes, recent_from)
                expected = len(self.msgs) - len(self.pending_expunge)
                if changes["count"] != expected:
                    present = set(await ctx.adb.read(mailstate.folder_uids, self.folder["id"]))
                    self.pending_expunge.update(u for u in self.uids if u not in present)
        if allow_expunge and self.pending_expunge:
            self.report_expunges(ctx, self.pending_expunge)
            self.pending_expunge = set()

    async def _claim_recent(self, ctx: Context, changes: dict) -> int:
        """Claim \\Recent for the messages that arrived since the last claim; returns the first
        UID that is \\Recent in this session among them (RFC 3501 §2.3.2)."""
        uidnext = changes["folder"]["uidnext"]
        if uidnext <= self.claimed_to:
            return uidnext
        first = changes.get("recent_from")  # claimed by this session's APPEND, in its transaction
        if first is None:
            first = await ctx.adb.write(mailstate.claim_recent, self.folder["id"], uidnext)
        self.claimed_to = uidnext
        return first

    def _apply(self, ctx: Context, changes: dict, recent_from: int) -> None:
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
            ctx.untagged(b"FLAGS " + self.flags_list())
            if not self.readonly:
                ctx.untagged(b"OK [PERMANENTFLAGS " + self.permanent_flags() + b"] Flags permitted")
        for i in updated:
            msg = self.msgs[i]
            ctx.untagged(b"%d FETCH (FLAGS %s)" % (i + 1, msg.flag_bytes()))
        if new_rows:
            for row in new_rows:
                msg = Msg(row[0], row[2], row[3], row[0] >= recent_from)
                msg.set_details(row[1], row[4], row[5], row[6])
                self.msgs.append(msg)
                self.uids.append(row[0])
                self.recent_count += msg.recent
            ctx.untagged(f"{len(self.msgs)} EXISTS")
            ctx.untagged(f"{self.recent_count} RECENT")

    async def load_details(self, ctx: Context, msgs: list[Msg]) -> None:
        """Load id, size, date and file name of messages that lack them (one query per span)."""
        todo = sorted(m.uid for m in msgs if m.id is None)
        if not todo:
            return
        rows = await ctx.adb.read(mailstate.message_details_for, self.folder["id"], todo)
        for row in rows:
            i = self.index_of(row[0])
            if i is not None:
                self.msgs[i].set_details(*row[1:5])

    def report_expunges(self, ctx: Context, uids: set[int]) -> None:
        """EXPUNGE responses, highest sequence number first, and drop them from the view."""
        for i in range(len(self.msgs) - 1, -1, -1):
            if self.msgs[i].uid in uids:
                ctx.untagged(f"{i + 1} EXPUNGE")
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

    # -- EXPUNGE (RFC 3501 §6.4.3, RFC 4315 §2.1) ------------------------------------

    async def expunge(self, ctx: Context, silent: bool, uids: Optional[list[int]] = None) -> None:
        """EXPUNGE / UID EXPUNGE (RFC 4315 §2.1) / the implicit one of CLOSE."""
        if self.dead:
            return
        known = [m.uid for m in self.msgs if m.uid not in self.pending_expunge] if uids is None else uids
        if not known:
            return
        assert ctx.mailbox is not None
        gone = await ctx.adb.write(mailstate.expunge, ctx.mailbox["id"], self.folder["id"], self.path, known)
        if gone:
            ctx.publish(self.folder)
            if silent:
                doomed = set(gone)
                self.msgs = [m for m in self.msgs if m.uid not in doomed]
                self.uids = [m.uid for m in self.msgs]
                self.recent_count = sum(1 for m in self.msgs if m.recent)
            else:
                self.pending_expunge.update(gone)
