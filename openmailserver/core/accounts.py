"""Account administration shared by the API and the CLI: domains, mailboxes, aliases, keys.

These functions are synchronous (password hashing and RSA key generation are
CPU work); the daemon calls them from an executor thread, the CLI directly.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from ..address import Address, mailbox_address, normalise_domain, parse_address, parse_mailbox_address
from ..auth import credentials
from ..config import Settings
from ..errors import ErrorCode, MailError, conflict, invalid_address, not_found
from ..mailauth import dkim
from ..store import Database, accounts, maildir
from ..util import _ID_ALPHABET

MAX_PASSWORD_LENGTH = 1024


@dataclass
class Principal:
    """Who an API key belongs to and what it may do."""

    key_id: str
    scopes: frozenset[str]
    mailbox_id: str | None = None
    address: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes


# ---- domains ---------------------------------------------------------------

def ensure_domain(db: Database, name: str) -> tuple[dict[str, Any], bool]:
    """The domain row, creating it with a fresh DKIM key when new. Returns (row, created)."""
    name = normalise_domain(name)
    existing = db.read(accounts.get_domain, name)
    if existing:
        return existing, False
    private_key = dkim.generate_private_key()
    row = db.write(accounts.insert_domain, name, dkim.DEFAULT_SELECTOR, private_key)
    return row, row["dkim_private_key"] == private_key


# ---- mailboxes -------------------------------------------------------------

def _check_password(password: Any) -> str:
    if not isinstance(password, str) or not password:
        raise MailError(ErrorCode.INVALID_PASSWORD, "the password must be a non-empty string")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MailError(ErrorCode.INVALID_PASSWORD, "the password is longer than 1024 characters")
    if len(password) < 8:
        raise MailError(ErrorCode.WEAK_PASSWORD, "the password must have at least 8 characters",
                        fix="omit the password to have a strong one generated")
    return password


def _check_quota(quota: Any) -> int | None:
    if quota is None:
        return None
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise MailError(ErrorCode.INVALID_QUOTA, "quota must be a non-negative number of bytes (0 = unlimited)")
    return quota


def random_local_part() -> str:
    """A fresh local part for an inbox created without a username."""
    return "agent-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def unknown_domain(domain: str) -> MailError:
    return MailError(ErrorCode.UNKNOWN_DOMAIN, f"{domain} is not a domain this server hosts",
                     fix="add it first: POST /v1/domains (or /api/v0/domains) with {\"domain\": \"" + domain + "\"}")


def create_mailbox(settings: Settings, db: Database, local_part: Any, domain: Any,
                   password: str | None = None, quota: int | None = None,
                   display_name: str = "", *, external_id: str | None = None, client_id: str | None = None,
                   add_domain: bool = True) -> dict[str, Any]:
    """Create a mailbox plus a mailbox-scoped API key; a new domain is added with it
    unless `add_domain` is False (then only hosted domains are accepted).

    Returns the mailbox row, the password (generated when not given) and the
    new key in plain text: the only time either is visible.
    """
    if not isinstance(local_part, str) or not isinstance(domain, str):
        raise invalid_address("local_part and domain must be strings")
    address = mailbox_address(local_part, domain)
    if not add_domain and db.read(accounts.get_domain, address.domain) is None:
        raise unknown_domain(address.domain)
    password = _check_password(password) if password is not None else credentials.new_password()
    quota = _check_quota(quota)
    if db.read(accounts.get_mailbox, str(address)):
        raise conflict(f"mailbox {address} already exists")
    if db.read(accounts.get_alias, str(address)):
        raise conflict(f"{address} is already an alias")
    domain_row, _ = ensure_domain(db, address.domain)
    root = maildir.mailbox_root(settings.mail_root, address.domain, address.local)
    for folder in maildir.DEFAULT_FOLDERS:
        maildir.ensure_folder(root, folder)
    try:
        mailbox = db.write(
            accounts.insert_mailbox, address=str(address), local_part=address.local,
            domain_id=domain_row["id"], password_hash=credentials.hash_password(password),
            quota_bytes=settings.default_quota if quota is None else quota,
            display_name=display_name or "", external_id=external_id, client_id=client_id)
    except Exception as exc:  # a concurrent create of the same address
        if "UNIQUE" in str(exc):
            raise conflict(f"mailbox {address} already exists") from None
        raise
    key, key_row = create_key(db, mailbox_id=mailbox["id"], name=f"{address} (created with mailbox)")
    return {"mailbox": mailbox, "password": password, "api_key": key, "api_key_row": key_row}


def get_mailbox(db: Database, address: str) -> dict[str, Any]:
    parsed = parse_mailbox_address(address)
    row = db.read(accounts.get_mailbox, str(parsed))
    if row is None:
        raise not_found(f"mailbox {parsed}")
    return row


def delete_mailbox(settings: Settings, db: Database, address: str) -> dict[str, Any]:
    row = get_mailbox(db, address)
    db.write(accounts.delete_mailbox, row["id"])
    return row


def set_password(db: Database, address: str, password: str | None) -> tuple[dict[str, Any], str]:
    row = get_mailbox(db, address)
    password = _check_password(password) if password is not None else credentials.new_password()
    db.write(accounts.update_mailbox, row["id"], password_hash=credentials.hash_password(password))
    return row, password


def update_mailbox(db: Database, address: str, *, quota: Any = None, display_name: Any = None,
                   active: Any = None) -> dict[str, Any]:
    row = get_mailbox(db, address)
    if display_name is not None and not isinstance(display_name, str):
        raise MailError(ErrorCode.INVALID_DISPLAY_NAME, "display_name must be a string")
    if active is not None and not isinstance(active, bool):
        raise MailError(ErrorCode.INVALID_ACTIVE, "active must be true or false")
    return db.write(accounts.update_mailbox, row["id"], quota_bytes=_check_quota(quota),
                    display_name=display_name, active=None if active is None else int(active))


def check_login(db: Database, address: str, password: str) -> dict[str, Any] | None:
    """The mailbox when `password` is right and the mailbox active; else None."""
    try:
        parsed = parse_address(address)
    except MailError:
        return None
    row = db.read(accounts.get_password_hash, f"{parsed.local.lower()}@{parsed.domain}")
    if row is None or not row["active"]:
        credentials.verify_password(password, credentials.DUMMY_HASH)  # same cost either way
        return None
    return row if credentials.verify_password(password, row["password_hash"]) else None


# ---- aliases ---------------------------------------------------------------

def _alias_source(source: Any) -> str:
    """`user@domain`, or `@domain` for a catch-all."""
    if not isinstance(source, str) or not source.strip():
        raise invalid_address("source must be an address or @domain")
    source = source.strip()
    if source.startswith("@"):
        return "@" + normalise_domain(source[1:])
    return str(parse_mailbox_address(source))


def create_alias(db: Database, source: Any, destination: Any) -> dict[str, Any]:
    src = _alias_source(source)
    domain = src.split("@", 1)[1]
    if not db.read(accounts.get_domain, domain):
        raise MailError(ErrorCode.UNKNOWN_DOMAIN, f"{domain} is not a domain this server hosts",
                        fix="create a mailbox on the domain first")
    if isinstance(destination, str):
        targets = [d.strip() for d in destination.split(",") if d.strip()]
    elif isinstance(destination, list) and all(isinstance(d, str) for d in destination):
        targets = [d.strip() for d in destination if d.strip()]
    else:
        raise invalid_address("destination must be an address or a comma-separated list")
    if not targets:
        raise invalid_address("destination is empty")
    normalised = []
    for target in targets:
        addr = str(parse_mailbox_address(target))
        if not (db.read(accounts.get_mailbox, addr) or db.read(accounts.get_alias, addr)):
            raise MailError(ErrorCode.UNKNOWN_DESTINATION,
                            f"{addr} is not a local mailbox or alias",
                            fix="create the mailbox first; aliases deliver to local mailboxes only")
        if addr == src:
            raise MailError(ErrorCode.ALIAS_LOOP, "an alias cannot point at itself")
        normalised.append(addr)
    if db.read(accounts.get_alias, src):
        raise conflict(f"alias {src} already exists")
    if db.read(accounts.get_mailbox, src):
        raise conflict(f"{src} is already a mailbox")
    try:
        return db.write(accounts.insert_alias, src, ",".join(dict.fromkeys(normalised)))
    except Exception as exc:
        if "UNIQUE" in str(exc):
            raise conflict(f"alias {src} already exists") from None
        raise


def delete_alias(db: Database, source: str) -> None:
    src = _alias_source(source)
    if not db.write(accounts.delete_alias, src):
        raise not_found(f"alias {src}")


# ---- API keys --------------------------------------------------------------

def create_key(db: Database, *, mailbox_id: str | None, name: str = "",
               plain: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new key: admin (all scopes) when `mailbox_id` is None, else the mailbox scopes."""
    key = plain or credentials.new_api_key()
    scopes = list(credentials.SCOPES) if mailbox_id is None else list(credentials.MAILBOX_SCOPES)
    row = db.write(accounts.insert_key, key_hash=credentials.hash_api_key(key),
                   prefix=credentials.visible_prefix(key), scopes=scopes, mailbox_id=mailbox_id, name=name)
    return key, row


def create_mailbox_key(db: Database, address: str, name: str = "") -> tuple[str, dict[str, Any]]:
    mailbox = get_mailbox(db, address)
    return create_key(db, mailbox_id=mailbox["id"], name=name or f"{mailbox['address']} key")


def revoke_key(settings: Settings, db: Database, key_id: str, mailbox_id: str | None = None) -> None:
    row = db.read(accounts.get_key, key_id)
    if row is None or row["revoked_at"] or (mailbox_id is not None and row["mailbox_id"] != mailbox_id):
        raise not_found(f"key {key_id}")
    if settings.admin_api_key and db.read(accounts.key_hash, key_id) == credentials.hash_api_key(
            settings.admin_api_key):
        raise conflict("this key is the admin_api_key setting; change the setting to replace it")
    db.write(accounts.revoke_key, key_id)


def ensure_admin_key(settings: Settings, db: Database) -> str | None:
    """Make sure an admin key exists; returns a newly generated one in plain text."""
    if settings.admin_api_key:
        digest = credentials.hash_api_key(settings.admin_api_key)
        if db.read(accounts.find_key, digest) is None:
            create_key(db, mailbox_id=None, name="admin (admin_api_key setting)", plain=settings.admin_api_key)
        return None
    if db.read(accounts.count_admin_keys):
        return None
    key, _ = create_key(db, mailbox_id=None, name="admin (generated by init)")
    return key


def authenticate(db: Database, key: str) -> Principal | None:
    row = db.read(accounts.find_key, credentials.hash_api_key(key))
    if row is None:
        return None
    return Principal(key_id=row["id"], scopes=frozenset(row["scopes"].split()),
                     mailbox_id=row["mailbox_id"], address=row["address"])


def public_key(row: dict[str, Any]) -> dict[str, Any]:
    """A key row as shown to users: never the hash."""
    return {"id": row["id"], "prefix": row["prefix"], "name": row["name"], "mailbox": row["address"],
            "scopes": row["scopes"].split(), "created_at": row["created_at"],
            "revoked_at": row["revoked_at"], "last_used_at": row["last_used_at"]}


def public_mailbox(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "email": row["address"], "display_name": row["display_name"],
            "quota": row["quota_bytes"], "used_bytes": row["used_bytes"], "active": bool(row["active"]),
            "created_at": row["created_at"]}


def address_of(parsed: Address) -> str:
    return f"{parsed.local.lower()}@{parsed.domain}"
