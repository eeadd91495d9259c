"""How a failing IMAP command ends: the exceptions of the IMAP server and the tagged status they become.

`command_status` is the one place where an exception that escaped a command
handler becomes that command's tagged response (`Session._run_handler` calls
it): `ImapError` carries its response, a `MailError` becomes ``NO`` with the
response code its `ErrorCode` names (a full disk: ``NO [OVERQUOTA]``), anything
else is logged and becomes ``NO [SERVERBUG]``. `StaleFolder` and `OverQuota` are raised inside APPEND's
delivery transaction (`imap.append`), which turns them into ``NO [TRYCREATE]``
(after one retry) and ``NO [OVERQUOTA]``.
"""

from __future__ import annotations

import logging

from ..errors import ErrorCode, MailError
from . import protocol as p

log = logging.getLogger(__name__)


class ImapError(Exception):
    """Ends a command with the given tagged status text, e.g. "NO [TRYCREATE] ..."."""

    def __init__(self, response: str) -> None:
        super().__init__(response)
        self.response = response


class StaleFolder(MailError):
    """The folder row an APPEND used no longer matches its name (renamed, deleted or re-created)."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.FOLDER_CHANGED, "The mailbox changed meanwhile")


def folder_gone(exc: MailError) -> bool:
    """Whether an APPEND failed because its folder was renamed, deleted or re-created meanwhile:
    the transaction found another folder or none by that name, or its directory was gone."""
    return isinstance(exc, StaleFolder) or isinstance(exc.__cause__, (LookupError, FileNotFoundError))


class OverQuota(MailError):
    def __init__(self) -> None:
        super().__init__(ErrorCode.MAILBOX_FULL, "Quota exceeded")


def command_status(exc: Exception, cmd: p.Command) -> str:
    """The tagged status of a command whose handler raised `exc` (connection errors aside)."""
    if isinstance(exc, ImapError):
        return exc.response
    if isinstance(exc, MailError):  # its RFC 5530 code, from the error registry
        return exc.imap_status()
    log.exception("IMAP command %s failed", cmd.full_name)
    return "NO [SERVERBUG] Internal error; the command was not completed"


__all__ = ["ImapError", "StaleFolder", "OverQuota", "folder_gone", "command_status"]
