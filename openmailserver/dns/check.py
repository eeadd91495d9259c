"""The DNS records a domain needs, and live checks of what is published.

Used by the deliverability report (API), later by domain verification and
`doctor`. Blocking (dnspython's default resolver, i.e. `dns_nameservers`);
run it in an executor.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

import dns.exception
import dns.resolver
import dns.reversename
import spf

from ..config import Settings
from ..mailauth.dkim import public_key_record
from .resolver import addresses, forget_cached_answers


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str
    record: dict[str, str] | None = None  # what to publish: type, name, value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _txt(name: str) -> list[str]:
    try:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in dns.resolver.resolve(name, "TXT")]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []


def _same_key(published: str, expected: str) -> bool:
    def key_of(record: str) -> str:
        tags = dict(part.strip().split("=", 1) for part in record.split(";") if "=" in part)
        return "".join(tags.get("p", "").split())

    return key_of(published) == key_of(expected) and key_of(expected) != ""


def plan(settings: Settings, domain: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The records to publish for `domain` (a domains row)."""
    name, host = domain["name"], settings.mail_host
    return {
        "mx": {"type": "MX", "name": name, "value": f"10 {host}."},
        "spf": {"type": "TXT", "name": name, "value": "v=spf1 mx -all"},
        "dkim": {"type": "TXT", "name": f"{domain['dkim_selector']}._domainkey.{name}",
                 "value": public_key_record(domain["dkim_private_key"])},
        "dmarc": {"type": "TXT", "name": f"_dmarc.{name}", "value": f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{name}"},
        "host": {"type": "A", "name": host, "value": "<public IPv4 of this server>"},
    }


def check_domain(settings: Settings, domain: dict[str, Any]) -> list[Check]:
    """Live checks of every record in `plan`, each with the record to publish when it fails."""
    name, host = domain["name"], settings.mail_host.rstrip(".").lower()
    records = plan(settings, domain)
    checks: list[Check] = []
    forget_cached_answers()
    try:
        mx_hosts = sorted((r.preference, r.exchange.to_text(omit_final_dot=True).lower())
                          for r in dns.resolver.resolve(name, "MX"))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        mx_hosts = []
    except dns.exception.DNSException as exc:
        return [Check("dns", "fail", f"the resolver did not answer: {exc}")]
    if any(h == host for _, h in mx_hosts):
        checks.append(Check("mx", "pass", f"MX points at {host}"))
    else:
        found = ", ".join(h for _, h in mx_hosts) or "no MX record"
        checks.append(Check("mx", "fail", f"MX of {name} should be {host}; found {found}", records["mx"]))
    ips = addresses(host)
    checks.append(Check("host", "pass", f"{host} resolves to {', '.join(ips)}") if ips else
                  Check("host", "fail", f"{host} has no A/AAAA record", records["host"]))
    for ip in ips:
        try:
            ptr = [r.target.to_text(omit_final_dot=True).lower()
                   for r in dns.resolver.resolve(dns.reversename.from_address(ip), "PTR")]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            ptr = []
        public = ipaddress.ip_address(ip).is_global
        if host in ptr:
            checks.append(Check("ptr", "pass", f"PTR of {ip} is {host}"))
        else:
            checks.append(Check("ptr", "fail" if public else "warn",
                                f"PTR of {ip} should be {host}; found {', '.join(ptr) or 'none'} "
                                "(set it at your hosting provider)",
                                {"type": "PTR", "name": dns.reversename.from_address(ip).to_text(), "value": host}))
    spf_records = [t for t in _txt(name) if t.lower().startswith("v=spf1")]
    if len(spf_records) != 1:
        checks.append(Check("spf", "fail", f"{name} needs exactly one SPF record; found {len(spf_records)}",
                            records["spf"]))
    elif not ips:
        checks.append(Check("spf", "warn", f"SPF record found ({spf_records[0]}), but {host} has no address "
                                           "to test it with"))
    else:
        result, explanation = spf.check2(i=ips[0], s=f"postmaster@{name}", h=host)
        checks.append(Check("spf", "pass", f"SPF authorises {ips[0]}") if result == "pass" else
                      Check("spf", "fail", f"SPF gives {result} for {ips[0]}: {explanation}", records["spf"]))
    dkim_name = records["dkim"]["name"]
    published = [t for t in _txt(dkim_name) if "p=" in t]
    if not published:
        checks.append(Check("dkim", "fail", f"no DKIM key at {dkim_name}", records["dkim"]))
    elif any(_same_key(t, records["dkim"]["value"]) for t in published):
        checks.append(Check("dkim", "pass", f"the key at {dkim_name} matches ours"))
    else:
        checks.append(Check("dkim", "fail", f"the key at {dkim_name} is not ours", records["dkim"]))
    dmarc = [t for t in _txt(f"_dmarc.{name}") if t.replace(" ", "").lower().startswith("v=dmarc1")]
    checks.append(Check("dmarc", "pass", f"DMARC: {dmarc[0]}") if len(dmarc) == 1 else
                  Check("dmarc", "warn" if not dmarc else "fail",
                        f"{name} should publish one DMARC record; found {len(dmarc)}", records["dmarc"]))
    return checks


def resolver_answers() -> dict[str, Any]:
    """Whether the configured resolver answers at all (any reply, even NXDOMAIN, counts)."""
    try:
        dns.resolver.resolve("openmailserver-health-check.invalid", "A", lifetime=3)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return {"status": "ok"}
    except dns.exception.DNSException as exc:
        return {"status": "fail", "error": str(exc) or type(exc).__name__}
    return {"status": "ok"}


# ---- domain verification: the four records a hosted domain publishes -------

# Record statuses of the domain APIs (/v1/domains, /api/v0/domains).
MISSING, INVALID, VALID = "MISSING", "INVALID", "VALID"
VERIFIED_KINDS = ("mx", "spf", "dkim", "dmarc")


def required_records(settings: Settings, domain: dict[str, Any]) -> list[dict[str, Any]]:
    """MX → this host, SPF, the DKIM key of the domain and DMARC, as the domain APIs show them."""
    records = plan(settings, domain)
    host = settings.mail_host.rstrip(".").lower()
    out = [{"kind": "mx", "type": "MX", "name": domain["name"], "value": host, "priority": 10}]
    for kind in ("spf", "dkim", "dmarc"):
        out.append({"kind": kind, "type": "TXT", "name": records[kind]["name"], "value": records[kind]["value"],
                    "priority": None})
    return out


def _words(text: str) -> str:
    return " ".join(text.lower().split())


def _dmarc_ok(record: str) -> bool:
    tags = dict(part.strip().split("=", 1) for part in record.split(";") if "=" in part)
    return tags.get("v", "").strip().upper() == "DMARC1" and tags.get("p", "").strip().lower() in (
        "none", "quarantine", "reject")


def _verify_one(settings: Settings, record: dict[str, Any]) -> tuple[str, str]:
    """(status, detail) of one required record, from live DNS."""
    kind, name = record["kind"], record["name"]
    if kind == "mx":
        try:
            hosts = [r.exchange.to_text(omit_final_dot=True).lower() for r in dns.resolver.resolve(name, "MX")]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return MISSING, f"{name} has no MX record"
        if record["value"] in hosts:
            return VALID, f"MX points at {record['value']}"
        return INVALID, f"MX of {name} points at {', '.join(hosts)}, not {record['value']}"
    if kind == "dkim":
        published = [t for t in _txt(name) if "p=" in t]
        if not published:
            return MISSING, f"no DKIM key at {name}"
        if any(_same_key(t, record["value"]) for t in published):
            return VALID, f"the key at {name} matches this server's"
        return INVALID, f"the key at {name} is not the one this server signs with"
    if kind == "dmarc":
        found = [t for t in _txt(name) if t.replace(" ", "").lower().startswith("v=dmarc1")]
        if not found:
            return MISSING, f"no DMARC record at {name}"
        if len(found) > 1:
            return INVALID, f"{name} has {len(found)} DMARC records; publish exactly one"
        return (VALID, f"DMARC: {found[0]}") if _dmarc_ok(found[0]) else \
            (INVALID, f"the DMARC record needs v=DMARC1 and p=none|quarantine|reject: {found[0]}")
    found = [t for t in _txt(name) if t.lower().startswith("v=spf1")]  # spf
    if not found:
        return MISSING, f"{name} has no SPF record"
    if len(found) > 1:
        return INVALID, f"{name} has {len(found)} SPF records; publish exactly one"
    if _words(found[0]) == _words(record["value"]):
        return VALID, f"SPF: {found[0]}"
    host = settings.mail_host.rstrip(".").lower()
    ips = addresses(host)
    if not ips:
        return INVALID, f"SPF is {found[0]!r}; publish {record['value']!r} (or any policy that authorises {host})"
    result, explanation = spf.check2(i=ips[0], s=f"postmaster@{name}", h=host)
    if result == "pass":
        return VALID, f"SPF authorises {ips[0]}"
    return INVALID, f"SPF gives {result} for {ips[0]} ({explanation}); publish {record['value']!r}"


def verify_records(settings: Settings, domain: dict[str, Any]) -> list[dict[str, Any]]:
    """Every required record with its live `status` (MISSING, INVALID, VALID) and a `detail`.
    Blocking: run it in an executor."""
    out = []
    forget_cached_answers()
    for record in required_records(settings, domain):
        try:
            status, detail = _verify_one(settings, record)
        except dns.exception.DNSException as exc:
            status, detail = MISSING, f"the resolver did not answer for {record['name']}: {exc or type(exc).__name__}"
        out.append({**record, "status": status, "detail": detail})
    return out


def zone_snippet(settings: Settings, domain: dict[str, Any], ttl: int = 3600) -> str:
    """The required records in BIND zone-file syntax (TXT values split into 255-byte strings)."""
    lines = [f"; records for {domain['name']} (openmailserver: mail host {settings.mail_host})"]
    for record in required_records(settings, domain):
        owner = record["name"].rstrip(".") + "."
        if record["type"] == "MX":
            data = f"{record['priority']} {record['value'].rstrip('.')}."
        else:
            value = record["value"]
            data = " ".join('"' + value[i:i + 255].replace("\\", "\\\\").replace('"', '\\"') + '"'
                            for i in range(0, len(value), 255))
        lines.append(f"{owner}\t{ttl}\tIN\t{record['type']}\t{data}")
    return "\n".join(lines) + "\n"
