"""COPY and MOVE (RFC 3501 §6.4.7, RFC 6851), with the COPYUID response code of UIDPLUS (RFC 4315)."""

from __future__ import annotations

from ..store import accounts as store_accounts
from ..store import mailstate
from ..store.messages import get_folder
from . import protocol as p
from .context import Context
from .errors import ImapError
from .files import fsync_dirs, link_files, unlink_all
from .selected import Selected


async def _destination(ctx: Context, name: str) -> dict:
    assert ctx.mailbox is not None
    folder = await ctx.adb.read(get_folder, ctx.mailbox["id"], name)
    if folder is None:
        raise ImapError("NO [TRYCREATE] Mailbox does not exist")
    return folder


async def copy(sel: Selected, ctx: Context, args: p.CopyArgs, uid: bool) -> str:
    """COPY / UID COPY, with COPYUID (RFC 4315 §3)."""
    indexes = sel.resolve(args.sequence_set, uid)
    dest = await _destination(ctx, args.mailbox)
    msgs = [sel.msgs[i] for i in indexes if sel.msgs[i].uid not in sel.pending_expunge]
    if not msgs:
        return "OK Copy completed" if uid else "OK Copy completed (no messages)"
    await sel.load_details(ctx, msgs)
    msgs = [m for m in msgs if m.id is not None]
    assert ctx.mailbox is not None
    mailbox = await ctx.adb.read(store_accounts.get_mailbox_by_id, ctx.mailbox["id"])
    if mailbox and mailbox["quota_bytes"] and \
            mailbox["used_bytes"] + sum(m.size for m in msgs) > mailbox["quota_bytes"]:
        return "NO [OVERQUOTA] Quota exceeded"
    dest_path = ctx.folder_path(dest["name"])
    links = await ctx.run_blocking(link_files, sel.path, dest_path, [(m.filename, m.size) for m in msgs])
    items = [(m.uid, link) for m, link in zip(msgs, links) if link is not None]
    assert ctx.mailbox is not None
    try:
        result = await ctx.adb.write(mailstate.copy_messages, ctx.mailbox["id"], sel.folder["id"], dest["id"], items)
    except Exception:
        await ctx.run_blocking(unlink_all, dest_path, [link for _, link in items])
        raise
    copied = {src for src, _ in result["pairs"]}
    stale = [link for src, link in items if src not in copied]
    if stale:
        await ctx.run_blocking(unlink_all, dest_path, stale)
    if not result["pairs"]:
        return "NO [EXPUNGEISSUED] The messages were expunged meanwhile"
    ctx.publish(dest)
    if dest["id"] == sel.folder["id"]:
        sel.dirty = True
    src_set = p.format_sequence_set(s for s, _ in result["pairs"])
    dst_set = p.format_sequence_set(d for _, d in result["pairs"])
    return f"OK [COPYUID {result['uidvalidity']} {src_set} {dst_set}] Copy completed"


async def move(sel: Selected, ctx: Context, args: p.CopyArgs, uid: bool) -> str:
    """MOVE / UID MOVE (RFC 6851)."""
    indexes = sel.resolve(args.sequence_set, uid)
    if sel.readonly:
        return "NO [READ-ONLY] Mailbox is read-only"
    dest = await _destination(ctx, args.mailbox)
    uids = [sel.msgs[i].uid for i in indexes if sel.msgs[i].uid not in sel.pending_expunge]
    if not uids:
        return "OK Move completed"
    dest_path = ctx.folder_path(dest["name"])
    result = await ctx.adb.write(mailstate.move_messages, sel.folder["id"], sel.path, dest["id"], dest_path, uids)
    if dest_path != sel.path:
        await ctx.run_blocking(fsync_dirs, [dest_path / "cur", dest_path / "new"])
    pairs = result["pairs"]
    if pairs:
        src_set = p.format_sequence_set(s for s, _ in pairs)
        dst_set = p.format_sequence_set(d for _, d in pairs)
        # RFC 6851 §4.3: COPYUID in an untagged OK before the expunges.
        ctx.untagged(f"OK [COPYUID {result['uidvalidity']} {src_set} {dst_set}] Moved")
        sel.report_expunges(ctx, {s for s, _ in pairs})
        ctx.publish(sel.folder)
        ctx.publish(dest)
        if dest["id"] == sel.folder["id"]:
            sel.dirty = True
    return "OK Move completed"
