"""What the selected state and the commands on it use of their session: the `Context` interface.

`Selected` (`imap.selected`) and the modules of the commands that work on the
selected folder (`imap.fetch`, `imap.flags`, `imap.search`, `imap.copy`) take
a `Context` and never the whole `Session`, so they cannot reach into the
session's input, dispatch or login state. `Session` (`imap.session`) provides
every member as a plain attribute or method, so `ctx.send` in a FETCH loop
costs what `session.send` did.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Protocol, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from ..store import AsyncDatabase, Database
    from ..store.renames import FlagRenames

T = TypeVar("T")


class Context(Protocol):
    """The narrow view of an IMAP session that the selected state needs."""

    #: The session's id: events it published itself are no news to it.
    id: str
    #: The logged-in mailbox row (None before LOGIN; the selected state only exists after it).
    mailbox: Optional[dict[str, Any]]
    #: The runtime's database, for the executor (`db`) and from the event loop (`adb`).
    db: Database
    adb: AsyncDatabase
    #: Message files renamed after flag changes (`store.renames`): STORE queues the renames here.
    renames: FlagRenames
    #: Bytes of output buffered and not yet written.
    out_size: int

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run blocking work in the runtime's executor."""
        ...

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Fire-and-forget work (cache writes), kept referenced until done."""
        ...

    def send(self, data: bytes) -> None:
        """Buffer response bytes; they go out at the end of the command or at the next `flush`."""
        ...

    def untagged(self, text: str | bytes) -> None:
        """Buffer an untagged response: ``* `` + text + CRLF."""
        ...

    async def flush(self) -> None:
        """Write the buffered output and wait until the client takes it."""
        ...

    def publish(self, folder: dict[str, Any]) -> None:
        """Tell the other sessions of this mailbox that `folder` changed."""
        ...

    def folder_path(self, name: str) -> Path:
        """The Maildir++ directory of a folder of the logged-in mailbox."""
        ...


__all__ = ["Context"]
