"""Where mail for a domain goes: MX lookup with the RFC 5321 §5.1 fallbacks.

Blocking (dnspython's default resolver, set up by `resolver.install`); run in
an executor thread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver

from .resolver import addresses


class RouteError(Exception):
    def __init__(self, message: str, *, permanent: bool, status: str) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


@dataclass(frozen=True)
class Hop:
    host: str  # the MX host name (for the record) ...
    ip: str    # ... and the address we connect to


def route(domain: str) -> list[Hop]:
    """Hosts to try in order. RouteError(permanent=True) when mail can never be delivered."""
    try:
        answer = dns.resolver.resolve(domain, "MX")
        records = sorted(answer, key=lambda r: (r.preference, random.random()))
        hosts = [r.exchange.to_text(omit_final_dot=True) for r in records]
        # RFC 7505: a single MX of "." means the domain accepts no mail.
        if len(records) == 1 and records[0].exchange == dns.name.root:
            raise RouteError(f"{domain} accepts no mail (null MX)", permanent=True, status="5.1.10")
    except dns.resolver.NXDOMAIN:
        raise RouteError(f"domain {domain} does not exist", permanent=True, status="5.1.2") from None
    except dns.resolver.NoAnswer:
        hosts = [domain]  # RFC 5321 §5.1: no MX, the domain itself is the implicit MX
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise RouteError(f"DNS lookup for {domain} failed: {exc}", permanent=False, status="4.4.3") from None
    hops = []
    for host in hosts:
        try:
            hops.extend(Hop(host, ip) for ip in addresses(host))
        except dns.exception.Timeout:
            continue
    if not hops:
        raise RouteError(f"no address for the mail hosts of {domain}", permanent=False, status="4.4.4")
    return hops
