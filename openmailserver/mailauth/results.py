"""SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) for inbound mail.

Blocking (DNS through dnspython's default resolver, which `resolver.install`
points at `dns_nameservers`); called from an executor thread. The results
become one `Authentication-Results` header (RFC 8601) and index columns.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from email.utils import getaddresses

import dns.exception
import dns.resolver
import spf
from authres import AuthenticationResultsHeader, DKIMAuthenticationResult, SPFAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult
from dkim import DKIM, DKIMException
from publicsuffix2 import PublicSuffixList

from ..mime import parse_headers

log = logging.getLogger(__name__)

_DKIM_SIGNATURE = re.compile(rb"^dkim-signature\s*:", re.I | re.M)


@dataclass
class AuthResults:
    spf: str
    dkim: str
    dmarc: str
    dmarc_policy: str
    header_value: str  # the value of the Authentication-Results header

    @property
    def dmarc_reject(self) -> bool:
        return self.dmarc == "fail" and self.dmarc_policy == "reject"


def _check_spf(ip: str, mail_from: str, helo: str) -> SPFAuthenticationResult:
    # RFC 7208 §2.4: with a null reverse-path, check postmaster@<HELO identity>.
    sender = mail_from or f"postmaster@{helo}"
    try:
        result, reason = spf.check2(i=ip, s=sender, h=helo, timeout=10)
    except Exception as exc:  # noqa: BLE001 - a lookup problem is a temperror, not a crash
        result, reason = "temperror", str(exc)
    return SPFAuthenticationResult(result=result, reason=reason, smtp_mailfrom=mail_from or None,
                                   smtp_helo=None if mail_from else helo)


def _check_dkim(message: bytes) -> DKIMAuthenticationResult:
    if not _DKIM_SIGNATURE.search(message.split(b"\r\n\r\n", 1)[0]):
        return DKIMAuthenticationResult(result="none")
    verifier = DKIM(message)
    try:
        result = "pass" if verifier.verify() else "fail"
    except DKIMException as exc:
        result = "permerror" if "missing" in str(exc).lower() else "fail"
    except Exception:  # noqa: BLE001 - dkimpy raises DNS errors of several kinds
        result = "temperror"
    fields = getattr(verifier, "signature_fields", {}) or {}
    return DKIMAuthenticationResult(
        result=result,
        header_d=fields.get(b"d", b"").decode("ascii", "replace") or None,
        header_i=fields.get(b"i", b"").decode("ascii", "replace") or None)


@functools.lru_cache(maxsize=1)
def _suffix_list() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with publicsuffix2, parsed once


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the registrable domain under the public suffix."""
    registrable = _suffix_list().get_public_suffix(domain.lower().rstrip("."))
    if "." not in registrable:  # a TLD the list does not know: its second level is registrable
        return ".".join(domain.lower().rstrip(".").split(".")[-2:])
    return registrable


def _dmarc_record(domain: str) -> dict[str, str] | None:
    try:
        answer = dns.resolver.resolve(f"_dmarc.{domain}", "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    records = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if len(records) != 1:  # RFC 7489 §6.6.3: none or several means no policy
        return None
    tags = {}
    for part in records[0].split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            tags[key.strip().lower()] = value.strip().lower()
    return tags


def _aligned(identifier: str, from_domain: str, mode: str) -> bool:
    identifier, from_domain = identifier.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


def _check_dmarc(message: bytes, spf_result: SPFAuthenticationResult, spf_domain: str,
                 dkim_result: DKIMAuthenticationResult) -> DMARCAuthenticationResult:
    """RFC 7489 §6.6: policy discovery and identifier alignment for the From domain."""
    from_values = parse_headers(message).get_all("From") or []
    addresses = [addr for _, addr in getaddresses(from_values) if "@" in addr]
    if len(addresses) != 1:
        return DMARCAuthenticationResult(result="permerror" if addresses else "none",
                                         result_comment="need exactly one From address")
    from_domain = addresses[0].rsplit("@", 1)[1].lower()
    try:
        record, org = _dmarc_record(from_domain), organizational_domain(from_domain)
        used_org = False
        if record is None and org != from_domain:
            record, used_org = _dmarc_record(org), True
    except dns.exception.DNSException:
        return DMARCAuthenticationResult(result="temperror", header_from=from_domain)
    if record is None or "p" not in record:
        return DMARCAuthenticationResult(result="none", header_from=from_domain)
    policy = record.get("sp", record["p"]) if used_org else record["p"]
    spf_ok = spf_result.result == "pass" and _aligned(spf_domain, from_domain, record.get("aspf", "r"))
    dkim_ok = dkim_result.result == "pass" and bool(dkim_result.header_d) and _aligned(
        dkim_result.header_d, from_domain, record.get("adkim", "r"))
    return DMARCAuthenticationResult(result="pass" if spf_ok or dkim_ok else "fail",
                                     header_from=from_domain, policy=policy)


def authenticate(message: bytes, *, authserv_id: str, ip: str, mail_from: str, helo: str) -> AuthResults:
    spf_result = _check_spf(ip, mail_from, helo)
    dkim_result = _check_dkim(message)
    spf_domain = mail_from.rsplit("@", 1)[1] if "@" in mail_from else helo
    dmarc_result = _check_dmarc(message, spf_result, spf_domain, dkim_result)
    dmarc, policy = str(dmarc_result.result), str(getattr(dmarc_result, "policy", "") or "")
    results = [spf_result, dkim_result, dmarc_result]
    header = str(AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
    value = header.split(":", 1)[1].strip() if header.lower().startswith("authentication-results:") else header
    return AuthResults(spf=str(spf_result.result), dkim=str(dkim_result.result), dmarc=dmarc,
                       dmarc_policy=policy.lower(), header_value=value)
