"""Hosted domains: add (with a DKIM key), describe the records to publish, verify them
live, delete. Shared by `/v1/domains`, `/api/v0/domains` and the CLI.

Synchronous (RSA key generation, blocking DNS); the daemon calls these from an
executor thread. A domain is `pending` until every required record (MX, SPF,
DKIM, DMARC) checks VALID through the daemon's resolver (`dns_nameservers`);
then it is `verified` and a `domain.verified` event is written in the same
transaction. A later failing check moves it back to `pending`, so the status
always tells what DNS said last.
"""

from __future__ import annotations

import json
from typing import Any

from ..address import normalise_domain
from ..config import Settings
from ..dns import check as dnscheck
from ..errors import ErrorCode, MailError, conflict, not_found
from ..store import Database, accounts, messages
from ..util import now_iso
from .accounts import ensure_domain

PENDING, VERIFIED = "pending", "verified"


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MailError(ErrorCode.INVALID_DOMAIN, "domain must be a domain name such as example.com")
    return normalise_domain(value.strip().rstrip("."))


def get(db: Database, ident: Any) -> dict[str, Any]:
    """A domain by name (or by `dom_…` id)."""
    if isinstance(ident, str) and ident.startswith("dom_"):
        row = db.read(accounts.get_domain_by_id, ident)
    else:
        try:
            row = db.read(accounts.get_domain, _name(ident))
        except MailError:
            row = None
    if row is None:
        raise not_found(f"domain {ident}")
    return row


def add(db: Database, name: Any, feedback_enabled: Any = True) -> dict[str, Any]:
    name = _name(name)
    if not isinstance(feedback_enabled, bool):
        raise MailError(ErrorCode.INVALID_REQUEST, "feedback_enabled must be true or false")
    if db.read(accounts.get_domain, name):
        raise conflict(f"domain {name} already exists")
    row, _ = ensure_domain(db, name)
    return db.write(accounts.update_domain, row["id"], feedback_enabled=int(feedback_enabled))


def records(settings: Settings, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The required records with the statuses of the last check (MISSING before any)."""
    last = {r["kind"]: r for r in json.loads(row.get("dns_records") or "[]")}
    out = []
    for record in dnscheck.required_records(settings, row):
        seen = last.get(record["kind"])
        # A result only counts for the value it was checked against (the host name may change).
        current = seen is not None and seen.get("value") == record["value"]
        out.append({**record, "status": seen["status"] if current else dnscheck.MISSING,
                    "detail": seen["detail"] if current else "not checked yet"})
    return out


def status(row: dict[str, Any]) -> str:
    return VERIFIED if (row.get("status") or "").lower() == VERIFIED else PENDING


def verify(settings: Settings, db: Database, ident: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Check every record live; returns the updated row and the `domain.verified` event when
    this check verified the domain (for the caller to publish after the commit)."""
    row = get(db, ident)
    checked = dnscheck.verify_records(settings, row)
    ok = all(r["status"] == dnscheck.VALID for r in checked)
    stored = json.dumps([{k: r[k] for k in ("kind", "value", "status", "detail")} for r in checked])

    def commit(conn) -> tuple[dict[str, Any], dict[str, Any] | None]:
        current = accounts.get_domain_by_id(conn, row["id"])
        if current is None:
            raise not_found(f"domain {row['name']}")
        event = None
        changes: dict[str, Any] = {"dns_records": stored, "checked_at": now_iso(),
                                   "status": VERIFIED if ok else PENDING}
        if ok and status(current) != VERIFIED:
            changes["verified_at"] = now_iso()
            event = messages.add_event(conn, "domain.verified", None, {
                "domain_id": current["id"], "domain": current["name"],
                "records": [{k: r[k] for k in ("type", "name", "value", "status")} for r in checked]})
        return accounts.update_domain(conn, current["id"], **changes), event

    return db.write(commit)


def delete(settings: Settings, db: Database, ident: Any) -> dict[str, Any]:
    row = get(db, ident)
    if row["name"] == settings.mail_domain:
        raise conflict(f"{row['name']} is the primary domain (setting primary_domain); it cannot be removed")

    def remove(conn) -> None:  # checked and deleted in one transaction: no mailbox sneaks in between
        mailboxes, aliases = accounts.domain_usage(conn, row["id"], row["name"])
        if mailboxes or aliases:
            raise MailError(ErrorCode.DOMAIN_IN_USE, f"{row['name']} still has {mailboxes} mailbox(es) and {aliases} "
                            "alias(es)", fix="delete its mailboxes and aliases first")
        accounts.delete_domain(conn, row["id"])

    db.write(remove)
    return row


def zone(settings: Settings, row: dict[str, Any]) -> str:
    return dnscheck.zone_snippet(settings, row)
