"""`openmailserver send`: a test message submitted by the CLI through `core.submit()`.

Local recipients get it at once; remote ones are queued in the database, where
the running daemon's queue picks them up within a second.
"""

from __future__ import annotations

from typing import Any

from ..address import parse_address
from ..config import Settings
from ..errors import ErrorCode, MailError
from ..mime.compose import compose
from ..runtime import Runtime
from ..store import Database
from . import recipients
from .submit import sender_denied, submit


async def send_test(settings: Settings, sender: str, to: list[str], subject: str, body: str) -> dict[str, Any]:
    if not settings.db_path.exists():
        raise MailError(ErrorCode.NOT_INITIALISED, f"no database at {settings.db_path}", fix="openmailserver init")
    rt = Runtime(settings, Database(settings.db_path))
    try:
        address = parse_address(sender)
        resolution = await rt.adb.read(recipients.resolve, address)
        if len(resolution.mailboxes) != 1:
            raise sender_denied(sender)
        envelope_from = f"{address.local}@{address.domain}"
        raw = compose(sender=envelope_from, to=to, cc=[], subject=subject, text=body + "\n", html=None)
        result = await submit(rt, mailbox=resolution.mailboxes[0], envelope_from=envelope_from, to=to, raw=raw,
                              client="cli")
        return {key: result.outbound[key] for key in ("id", "queue_id", "state", "recipients", "message_id")}
    finally:
        rt.close()
