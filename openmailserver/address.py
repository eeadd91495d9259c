"""Address validation and normalisation.

Every address is checked here before it is compared, stored or turned into a
path. Two levels:

* `parse_address` accepts what RFC 5321 §4.1.2 allows in an envelope (dot-atom
  local parts, UTF-8 per RFC 6531) and normalises the domain (lower case, IDNA).
* `mailbox_local_part` is stricter: the local part of a mailbox we host becomes
  a directory name, so it is lower-cased and limited to a safe character set.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .errors import invalid_address

# RFC 5321 §4.5.3.1.1-3 size limits (octets).
MAX_LOCAL = 64
MAX_DOMAIN = 253
MAX_ADDRESS = 254

# RFC 5322 §3.2.3 atext, plus any non-ASCII character (RFC 6531 §3.3).
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SAFE_LOCAL = re.compile(r"^[\w\-]+(?:\.[\w\-]+)*$", re.UNICODE)
SUBADDRESS_DELIMITER = "+"


@dataclass(frozen=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def normalise_domain(domain: str) -> str:
    """Lower-case and IDNA-encode a domain, or raise MailError(invalid_address)."""
    text = domain.strip().rstrip(".")
    if not text:
        raise invalid_address("the domain is empty")
    if text.startswith("[") and text.endswith("]"):
        raise invalid_address("address literals are not accepted as mail domains")
    try:
        ascii_domain = text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise invalid_address(f"{domain!r} is not a valid domain name") from None
    if len(ascii_domain) > MAX_DOMAIN:
        raise invalid_address("the domain is longer than 253 characters")
    labels = ascii_domain.split(".")
    if len(labels) < 2 and ascii_domain != "localhost":
        raise invalid_address(f"{domain!r} is not a fully qualified domain name")
    for label in labels:
        if not _LABEL.match(label):
            raise invalid_address(f"{domain!r} is not a valid domain name")
    if labels[-1].isdigit():
        raise invalid_address(f"{domain!r} is not a valid domain name")
    return ascii_domain


def check_local_part(local: str) -> str:
    """A dot-atom local part (RFC 5322 §3.4.1), returned unchanged."""
    if not local:
        raise invalid_address("the local part is empty")
    if len(local.encode("utf-8")) > MAX_LOCAL:
        raise invalid_address("the local part is longer than 64 octets")
    if local.startswith('"'):
        raise invalid_address("quoted local parts are not accepted")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise invalid_address("dots may not start or end the local part, nor follow each other")
    for atom in local.split("."):
        if not _ATEXT.match(atom):
            raise invalid_address(f"{local!r} contains characters not allowed in an address")
    if any(unicodedata.category(ch).startswith("C") for ch in local):
        raise invalid_address("control characters are not allowed in an address")
    return local


def parse_address(text: str) -> Address:
    """Validate an address `local@domain`; the domain comes back normalised."""
    if not isinstance(text, str):
        raise invalid_address("an address must be a string")
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if len(text.encode("utf-8")) > MAX_ADDRESS + 40:  # room before IDNA shrinks nothing
        raise invalid_address("the address is longer than 254 characters")
    local, at, domain = text.rpartition("@")
    if not at:
        raise invalid_address(f"{text!r} is not an address (no @)")
    check_local_part(local)
    address = Address(local, normalise_domain(domain))
    if len(str(address).encode("utf-8")) > MAX_ADDRESS:
        raise invalid_address("the address is longer than 254 characters")
    return address


def mailbox_local_part(local: str) -> str:
    """The local part of a mailbox we host: lower case, safe as a directory name."""
    if not isinstance(local, str):
        raise invalid_address("the local part must be a string")
    local = unicodedata.normalize("NFC", local.strip()).lower()
    check_local_part(local)
    if SUBADDRESS_DELIMITER in local:
        raise invalid_address("'+' is reserved for subaddresses (local+tag@domain)")
    if not _SAFE_LOCAL.match(local):
        raise invalid_address(
            f"{local!r}: mailbox names may use letters, digits, '.', '_' and '-' only")
    return local


def mailbox_address(local: str, domain: str) -> Address:
    address = Address(mailbox_local_part(local), normalise_domain(domain))
    if len(str(address).encode("utf-8")) > MAX_ADDRESS:
        raise invalid_address("the address is longer than 254 characters")
    return address


def parse_mailbox_address(text: str) -> Address:
    """A full address naming one of our mailboxes (strict local part)."""
    address = parse_address(text)
    return mailbox_address(address.local, address.domain)


def split_subaddress(local: str) -> tuple[str, str | None]:
    """`user+tag` -> (`user`, `tag`); RFC 5233 subaddressing."""
    base, sep, tag = local.partition(SUBADDRESS_DELIMITER)
    return (base, tag) if sep and base else (local, None)
