"""STORE (RFC 3501 §6.4.6): changing the flags of messages, and the flag writes FETCH makes too."""

from __future__ import annotations

from ..store import mailstate
from . import protocol as p
from .context import Context
from .selected import Selected


async def store_flags(sel: Selected, ctx: Context, uids: list[int], mode: mailstate.StoreMode,
                      flags: list[str]) -> list[tuple[int, str, int, str]]:
    """Write flags to the index and the view; also the \\Seen that FETCH sets (RFC 3501 §6.4.5)."""
    # The files are renamed later (`store.renames`); the index is the authority for
    # flags meanwhile (and after a crash).
    result = await ctx.adb.write(mailstate.store_flags, sel.folder["id"], sel.path, uids, mode, flags,
                                 ctx.renames.queue)
    for uid, text, modseq, filename in result["rows"]:
        i = sel.index_of(uid)
        if i is not None:
            msg = sel.msgs[i]
            msg.set_flags(text)
            if msg.id is not None:
                msg.filename = filename
    if result["keywords"]:
        seen = {k.lower() for k in sel.keywords}
        added = [k for k in result["keywords"] if k.lower() not in seen]
        if added:
            sel.keywords.extend(added)
            ctx.untagged(b"FLAGS " + sel.flags_list())
            ctx.untagged(b"OK [PERMANENTFLAGS " + sel.permanent_flags() + b"] Flags permitted")
    if result["modseq"] is not None:
        if result["modseq"] == sel.known_modseq + 1:
            # Nothing else changed since this view last looked: it knows every change up
            # to its own, and its next sync need not read back the rows it just wrote.
            sel.known_modseq = result["modseq"]
        ctx.publish(sel.folder)
    return result["rows"]


async def store(sel: Selected, ctx: Context, args: p.StoreArgs, uid: bool) -> str:
    """STORE; like Dovecot, report only flags that are not what the client can assume.

    Without .SILENT that is every message whose flags changed from what this
    session knew; with .SILENT only those where another session's change
    made the result differ from what the client computed itself.
    """
    indexes = sel.resolve(args.sequence_set, uid)
    if sel.readonly:
        return "NO [READ-ONLY] Mailbox is read-only"
    targets = [sel.msgs[i] for i in indexes if sel.msgs[i].uid not in sel.pending_expunge]
    if not targets:
        return "OK Store completed"
    flags = sel.canonical_keywords(args.flags)
    before = {m.uid: m.flags for m in targets}
    await store_flags(sel, ctx, [m.uid for m in targets], args.operation, flags)
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
        i = sel.index_of(msg.uid)
        if i is None:
            continue
        if uid:
            ctx.send(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (i + 1, msg.uid, msg.flag_bytes()))
        else:
            ctx.send(b"* %d FETCH (FLAGS %s)\r\n" % (i + 1, msg.flag_bytes()))
        if ctx.out_size > 256 * 1024:
            await ctx.flush()
    return "OK Store completed"
