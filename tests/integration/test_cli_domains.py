"""Domains from the command line: add, plan, publish, verify, delete."""

from __future__ import annotations

import json

import dns.zone


def test_domain_lifecycle(make_daemon, dns_server):
    daemon = make_daemon("cli", dns_nameservers=[dns_server.address])
    added = json.loads(daemon.cli("domain", "add", "shop.test", "--json").stdout)
    assert added["status"] == "pending"
    assert {r["kind"]: r["status"] for r in added["records"]} == {
        "mx": "MISSING", "spf": "MISSING", "dkim": "MISSING", "dmarc": "MISSING"}
    assert daemon.cli("domain", "add", "shop.test", check=False).returncode == 1  # exists
    snippet = daemon.cli("dns", "plan", "shop.test").stdout
    zone = dns.zone.from_text("$ORIGIN shop.test.\n$TTL 300\n@ SOA ns. host. 1 1 1 1 1\n@ NS ns.\n" + snippet,
                              relativize=False, check_origin=False)
    records = []
    for name, ttl, rdata in zone.iterate_rdatas():
        if rdata.rdtype.name in ("MX", "TXT"):
            value = rdata.to_text() if rdata.rdtype.name == "MX" else b"".join(rdata.strings).decode()
            records.append((name.to_text(), rdata.rdtype.name, value))
    assert len(records) == 4
    for name, rtype, value in records:
        dns_server.add(name, rtype, "v=DKIM1; k=rsa; p=AAAAwrong" if "_domainkey" in name else value)
    failing = daemon.cli("domain", "verify", "shop.test", "--json", check=False)
    assert failing.returncode == 1
    statuses = {r["kind"]: r["status"] for r in json.loads(failing.stdout)["records"]}
    assert statuses == {"mx": "VALID", "spf": "VALID", "dkim": "INVALID", "dmarc": "VALID"}
    dkim_name, _, dkim_value = next(r for r in records if "_domainkey" in r[0])
    dns_server.set(dkim_name, "TXT", [dkim_value])
    verified = json.loads(daemon.cli("domain", "verify", "shop.test", "--json").stdout)
    assert verified["status"] == "verified" and verified["verified_at"]
    assert "shop.test" in daemon.cli("domain", "show", "shop.test").stdout
    listed = json.loads(daemon.cli("domain", "list", "--json").stdout)
    assert {d["name"] for d in listed} == {"cli.test", "shop.test"}
    daemon.create_mailbox("owner", "shop.test")
    refused = daemon.cli("domain", "delete", "shop.test", check=False)
    assert refused.returncode == 1 and "mailbox" in refused.stderr
    assert daemon.cli("dns", "plan", "nowhere.test", check=False).returncode == 1
