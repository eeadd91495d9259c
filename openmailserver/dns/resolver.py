"""The daemon's DNS resolver, built from `dns_nameservers`.

It is installed as dnspython's default resolver because pyspf, dkimpy and
authheaders look names up through that default; our own code takes it from
here. Lookups are blocking and run in executor threads.
"""

from __future__ import annotations

import dns.nameserver
import dns.resolver

from ..config import Settings

LIFETIME = 5.0
CACHE_ENTRIES = 20_000


def parse_nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    """`ip`, `ip:port`, `[v6]:port` or a bare IPv6 address."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    return dns.nameserver.Do53Nameserver(host, port)


def build_resolver(settings: Settings) -> dns.resolver.Resolver:
    if settings.dns_nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [parse_nameserver(ns) for ns in settings.dns_nameservers]
    else:
        resolver = dns.resolver.Resolver()
    # Answers are kept for their TTL (negative ones for the zone's SOA minimum), as a local
    # caching resolver would: SPF and DMARC ask for the same names message after message.
    resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
    resolver.lifetime = LIFETIME
    resolver.timeout = 2.0
    resolver.use_edns(0, 0, 1232)
    return resolver


def forget_cached_answers() -> None:
    """Checks of what is published *now* (verification, doctor, reports) must not see cached answers."""
    cache = getattr(dns.resolver.default_resolver, "cache", None)
    if cache is not None:
        cache.flush()


def addresses(name: str) -> list[str]:
    """The A and AAAA addresses of `name` (blocking). A type with no records adds none; so does a
    type whose servers all fail (some answer SERVFAIL for AAAA only), unless both fail: then
    `NoNameservers` is raised, as is a timeout."""
    found: list[str] = []
    failed: dns.resolver.NoNameservers | None = None
    for rtype in ("A", "AAAA"):
        try:
            found.extend(r.address for r in dns.resolver.resolve(name, rtype))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.resolver.NoNameservers as exc:
            if failed is not None:
                raise
            failed = exc
    return found


def install(settings: Settings) -> dns.resolver.Resolver:
    resolver = build_resolver(settings)
    dns.resolver.default_resolver = resolver
    return resolver
