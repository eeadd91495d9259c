"""SQLite index and control state plus the Maildir tree (docs/architecture.md, "Invariants").

`db` runs SQL (sync, and group-committed async), `accounts` and `messages` hold
the SQL functions, `maildir` the durable file operations, `reconcile` brings
index and Maildir back into agreement at start-up.
"""

from .db import AsyncDatabase, Database

__all__ = ["AsyncDatabase", "Database"]
