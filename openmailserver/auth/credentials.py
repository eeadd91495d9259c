"""Mailbox passwords (argon2 via libpass) and API keys (SHA-256, looked up by hash)."""

from __future__ import annotations

import hashlib
import re
import secrets

from passlib.hash import argon2

from ..util import _ID_ALPHABET

KEY_PREFIX = "om_"
KEY_BODY_LENGTH = 40  # base32 characters: 200 random bits
VISIBLE_PREFIX_LENGTH = len(KEY_PREFIX) + 8
KEY_PATTERN = re.compile(r"\bom_[a-z2-7]{%d}\b" % KEY_BODY_LENGTH)

# Scopes of the HTTP API. The admin key holds all of them.
SCOPES = ("admin", "mail:read", "mail:send", "debug:read")
MAILBOX_SCOPES = ("mail:read", "mail:send")

_hasher = argon2.using(type="ID")
# A hash with the parameters `hash_password` uses now, verified against when a login names no
# mailbox, so that it costs what a real one does. Written out, not computed: an argon2 hash at
# import would cost every process, each CLI command too, 0.2 s. (tests/unit/test_credentials.py
# checks that its parameters are current.)
DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$kJJSyhnj3FtLiRFiDGHMmQ$b5kfaEmRRr+1hqp0pm8bIUYmKC7RBCTnulOJKVtogX4"


def new_api_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_BODY_LENGTH))


def hash_api_key(key: str) -> str:
    # Keys carry 200 random bits, so an unsalted digest is safe and lets us look them up.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_PREFIX_LENGTH]


def redact_keys(text: str) -> str:
    """Replace every API key in `text` by its visible prefix."""
    return KEY_PATTERN.sub(lambda m: visible_prefix(m.group(0)) + "…", text)


def new_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher.verify(password, password_hash)
    except (ValueError, TypeError):
        return False
