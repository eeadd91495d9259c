"""FETCH (RFC 3501 §6.4.5): compiling the request, loading message data in batches, writing the responses.

Message data comes from, cheapest first: the view itself (FLAGS, UID,
RFC822.SIZE, INTERNALDATE), the `message_cache` table (ENVELOPE, BODY,
BODYSTRUCTURE, header block), the first bytes of the file (header sections),
the whole file. File reads and MIME parsing run in the executor in batches,
and what was computed is written back to the cache in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

from ..mime import structure
from ..store import mailstate
from . import protocol as p
from .context import Context
from .files import FileFinder
from .flags import store_flags
from .message import Msg
from .selected import Selected

FETCH_BATCH = 400
FETCH_BATCH_BYTES = 4 * 1024 * 1024
LOAD_AHEAD = 2  # FETCH batches read ahead of the one being sent
INLINE_READ = 256 * 1024  # the event loop reads files up to this size...
INLINE_READ_SECONDS = 0.004  # ...for up to this long per batch

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


async def fetch(sel: Selected, ctx: Context, args: p.FetchArgs, uid: bool) -> str:
    """FETCH / UID FETCH."""
    indexes = sel.resolve(args.sequence_set, uid)
    attrs = list(args.attributes)
    if uid and not any(a.name == "UID" for a in attrs):
        attrs.insert(0, p.FetchAttribute("UID"))
    seen_set: set[int] = set()
    if not sel.readonly and any(a.sets_seen for a in attrs):
        unseen = [sel.msgs[i].uid for i in indexes
                  if not sel.msgs[i].has("\\Seen") and sel.msgs[i].uid not in sel.pending_expunge]
        if unseen:
            await store_flags(sel, ctx, unseen, "add", ["\\Seen"])
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
            _fetch_chunks(ctx, i, sel.msgs[i], plan, None, only_seen)
            if ctx.out_size > 256 * 1024:
                await ctx.flush()
        return "OK Fetch completed"
    finder = FileFinder(sel.path)
    entries: list[tuple[str, dict]] = []
    missing = 0
    batches = _batches(sel, indexes, plan)
    # The next batches load (`_load`) while one is formatted and sent.
    pending: deque[asyncio.Future] = deque()
    ahead = iter(batches)
    try:
        for batch in batches:
            for following in ahead:
                pending.append(asyncio.ensure_future(_load(sel, ctx, finder, following, plan)))
                if len(pending) > LOAD_AHEAD:
                    break
            details, data, new, _ = await pending.popleft()
            entries.extend(new)
            for i in batch:
                msg = sel.msgs[i]
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
                _fetch_chunks(ctx, i, msg, plan, item, only_seen)
            await ctx.flush()
    finally:
        for future in pending:
            with contextlib.suppress(Exception):
                await future
        finder.close()
    if entries:
        ctx.spawn(ctx.adb.write(mailstate.cache_put, entries))
    if missing:
        return "NO [EXPUNGEISSUED] Some messages were expunged meanwhile"
    return "OK Fetch completed"


def _batches(sel: Selected, indexes: list[int], plan: Plan) -> list[list[int]]:
    """Split a FETCH into batches: by count and, when whole messages are read, by bytes."""
    limit = FETCH_BATCH if plan.full else FETCH_BATCH * 10
    batches: list[list[int]] = []
    batch: list[int] = []
    size = 0
    for i in indexes:
        batch.append(i)
        if plan.full:
            size += sel.msgs[i].size or 4096
        if len(batch) >= limit or size >= FETCH_BATCH_BYTES:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    return batches


async def _load(sel: Selected, ctx: Context, finder: FileFinder, batch: list[int], plan: Plan):
    msgs = [sel.msgs[i] for i in batch]
    if plan.cache or any(m.id is None for m in msgs):
        uids = sorted(m.uid for m in msgs)
        return await ctx.run_blocking(load_batch, ctx.db, sel.folder["id"], finder, uids, plan)
    # Files in the page cache are read here: cheaper than a trip to a thread and its GIL
    # handoff at every system call. The loop reads for a bounded time and leaves the rest
    # (files not cached, large ones) to the executor.
    known = [(m.uid, m.id, m.size, m.idate, m.filename) for m in msgs]
    uids = [m.uid for m in msgs]
    details, data, entries, rest = load_batch(ctx.db, sel.folder["id"], finder, uids, plan, known,
                                              time.perf_counter() + INLINE_READ_SECONDS)
    if rest:
        more = await ctx.run_blocking(load_batch, ctx.db, sel.folder["id"], finder, [r[0] for r in rest], plan,
                                      rest)
        details.update(more[0])
        data.update(more[1])
        entries.extend(more[2])
    return details, data, entries, []


def _fetch_chunks(ctx: Context, i: int, msg: Msg, plan: Plan, data: Optional[dict],
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
        ctx.send((b" " if opened else b"* %d FETCH (" % (i + 1)) + b" ".join(head))
        ctx.send(literal)
        opened = True
        head = []
    if opened:
        ctx.send((b" " + b" ".join(head) if head else b"") + b")\r\n")
    else:
        ctx.send(b"* %d FETCH (" % (i + 1) + b" ".join(head) + b")\r\n")
