"""The command table: for each IMAP command, the function that runs it and the states it is valid in.

States (RFC 3501 §3): "nonauth" (not authenticated), "auth" (authenticated),
"selected" (a mailbox is selected). A handler takes the session and the parsed
command and returns the tagged status text (`session.Handler`); `Session.dispatch`
checks the state first. The handlers live with their family:

* any state: `Session` itself (CAPABILITY, NOOP, LOGOUT, ID, ENABLE);
* logging in: `imap.auth`; the folder hierarchy: `imap.folders`; APPEND: `imap.append`;
  IDLE: `imap.idle`;
* the selected state: `imap.selection` (SELECT, EXAMINE, CLOSE, UNSELECT, and the routing
  of CHECK, EXPUNGE, SEARCH, FETCH, STORE, COPY and MOVE to `imap.fetch`, `imap.flags`,
  `imap.search` and `imap.copy`).
"""

from __future__ import annotations

from . import append, auth, folders, idle, selection
from .session import Handlers, Session

_ANY = ("nonauth", "auth", "selected")
_AUTHED = ("auth", "selected")
_SEL = ("selected",)
COMMANDS: Handlers = {
    "CAPABILITY": (Session.cmd_capability, _ANY),
    "NOOP": (Session.cmd_noop, _ANY),
    "LOGOUT": (Session.cmd_logout, _ANY),
    "ID": (Session.cmd_id, _ANY),
    "STARTTLS": (auth.cmd_starttls, ("nonauth",)),
    "LOGIN": (auth.cmd_login, ("nonauth",)),
    "AUTHENTICATE": (auth.cmd_authenticate, ("nonauth",)),
    "ENABLE": (Session.cmd_enable, _AUTHED),
    "NAMESPACE": (folders.cmd_namespace, _AUTHED),
    "SELECT": (selection.cmd_select, _AUTHED),
    "EXAMINE": (selection.cmd_select, _AUTHED),
    "CREATE": (folders.cmd_create, _AUTHED),
    "DELETE": (folders.cmd_delete, _AUTHED),
    "RENAME": (folders.cmd_rename, _AUTHED),
    "SUBSCRIBE": (folders.cmd_subscribe, _AUTHED),
    "UNSUBSCRIBE": (folders.cmd_subscribe, _AUTHED),
    "LIST": (folders.cmd_list, _AUTHED),
    "LSUB": (folders.cmd_list, _AUTHED),
    "STATUS": (folders.cmd_status, _AUTHED),
    "APPEND": (append.cmd_append, _AUTHED),
    "IDLE": (idle.cmd_idle, _AUTHED),
    "CHECK": (selection.cmd_selected, _SEL),
    "EXPUNGE": (selection.cmd_selected, _SEL),
    "SEARCH": (selection.cmd_selected, _SEL),
    "FETCH": (selection.cmd_selected, _SEL),
    "STORE": (selection.cmd_selected, _SEL),
    "COPY": (selection.cmd_selected, _SEL),
    "MOVE": (selection.cmd_selected, _SEL),
    "CLOSE": (selection.cmd_close, _SEL),
    "UNSELECT": (selection.cmd_close, _SEL),
}

__all__ = ["COMMANDS"]
