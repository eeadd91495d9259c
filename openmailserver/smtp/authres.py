"""SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) for inbound mail.

Blocking (DNS through dnspython's default resolver, which `resolver.install`
points at `dns_nameservers`); called from an executor thread. The results
become one `Authentication-Results` header (RFC 8601) and index columns.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import spf
from authheaders import check_dmarc
from authres import AuthenticationResultsHeader, DKIMAuthenticationResult, SPFAuthenticationResult
from dkim import DKIM, DKIMException

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


def authenticate(message: bytes, *, authserv_id: str, ip: str, mail_from: str, helo: str) -> AuthResults:
    spf_result = _check_spf(ip, mail_from, helo)
    dkim_result = _check_dkim(message)
    try:
        dmarc_result = check_dmarc(message, spf_result=spf_result, dkim_result=dkim_result)
        dmarc, policy = str(dmarc_result.result or "none"), str(getattr(dmarc_result, "policy", "") or "")
    except Exception as exc:  # noqa: BLE001 - malformed From or DNS trouble
        log.info("DMARC evaluation failed: %s", exc)
        dmarc_result, dmarc, policy = None, "temperror", ""
    results = [spf_result, dkim_result] + ([dmarc_result] if dmarc_result is not None else [])
    header = str(AuthenticationResultsHeader(authserv_id=authserv_id, results=results))
    value = header.split(":", 1)[1].strip() if header.lower().startswith("authentication-results:") else header
    return AuthResults(spf=str(spf_result.result), dkim=str(dkim_result.result), dmarc=dmarc,
                       dmarc_policy=policy.lower(), header_value=value)
