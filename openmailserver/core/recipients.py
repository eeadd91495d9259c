"""Recipient resolution: mailbox, alias (of aliases, loop-safe), `local+tag`, catch-all."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..address import Address, split_subaddress
from ..store import accounts

MAX_ALIAS_DEPTH = 10


@dataclass(frozen=True)
class Resolution:
    """Where mail for one RCPT address goes. `hosted` is False for a domain we don't serve."""

    hosted: bool
    mailboxes: tuple[dict, ...] = ()
    subaddress: str | None = None


def _expand(conn: sqlite3.Connection, address: str, seen: set[str], depth: int) -> list[dict]:
    if address in seen or depth > MAX_ALIAS_DEPTH:
        return []  # a loop or a chain too deep delivers nowhere along that branch
    seen.add(address)
    mailbox = accounts.get_mailbox(conn, address)
    if mailbox is not None:
        return [mailbox] if mailbox["active"] else []
    alias = accounts.get_alias(conn, address)
    if alias is None:
        return []
    found: list[dict] = []
    for target in alias["destination"].split(","):
        found.extend(_expand(conn, target.strip(), seen, depth + 1))
    return found


def resolve(conn: sqlite3.Connection, address: Address) -> Resolution:
    """Run inside one read transaction (`db.read(resolve, address)`)."""
    if accounts.get_domain(conn, address.domain) is None:
        return Resolution(hosted=False)
    local = address.local.lower()
    base, tag = split_subaddress(local)
    candidates = [(f"{local}@{address.domain}", None)]
    if tag is not None:
        candidates.append((f"{base}@{address.domain}", tag))
    candidates.append((f"@{address.domain}", None))  # catch-all
    for candidate, subaddress in candidates:
        found = _expand(conn, candidate, set(), 0)
        if found:
            unique = {m["id"]: m for m in found}
            return Resolution(True, tuple(unique.values()), subaddress)
    return Resolution(hosted=True)
