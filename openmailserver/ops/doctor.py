"""`openmailserver doctor`: health and deliverability checks, each with the fix.

Works whether or not the daemon runs: it reads the data directory, connects
to the configured ports and asks DNS (through `dns_nameservers`) directly.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass

from .. import tls
from ..config import LISTENER_PORTS, Settings
from ..dns import check as dnscheck
from ..dns import resolver
from ..store import Database, accounts
from ..util import disk_status
from .pidfile import running_pid


@dataclass
class Finding:
    check: str
    status: str  # pass | warn | fail
    detail: str
    fix: str = ""


def _listeners(settings: Settings, running: bool) -> list[Finding]:
    found = []
    for name, (host, port) in settings.listeners().items():
        target = "127.0.0.1" if host in ("0.0.0.0", "") else host
        try:
            with socket.create_connection((target, port), timeout=2):
                found.append(Finding(f"listener {name}", "pass", f"{host}:{port} accepts connections"))
        except OSError as exc:
            status = "fail" if running else "warn"
            found.append(Finding(f"listener {name}", status, f"{host}:{port}: {exc.strerror or exc}",
                                 "start the daemon (systemctl start openmailserver)" if not running else
                                 f"check the logs; set {LISTENER_PORTS[name]} = 0 to disable this listener"))
    return found


def _certificate(settings: Settings) -> Finding:
    cert = tls.certificate_status(settings.cert_path)
    fix = "renew it (or set tls_cert/tls_key to certbot's fullchain.pem/privkey.pem), then systemctl reload"
    if cert["status"] == "fail":
        return Finding("tls certificate", "fail", cert.get("error") or f"expired on {cert['expires_at']}", fix)
    if cert["status"] == "warn":
        return Finding("tls certificate", "warn", f"expires in {cert['days_left']} days", fix)
    return Finding("tls certificate", "pass", f"valid for {cert['days_left']} more days ({cert['path']})")


def run(settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    running = running_pid(settings) is not None
    findings.append(Finding("daemon", "pass" if running else "warn",
                            "running" if running else "not running",
                            "" if running else "systemctl start openmailserver (or openmailserver serve)"))
    if not settings.db_path.exists():
        findings.append(Finding("database", "fail", f"no database at {settings.db_path}", "openmailserver init"))
        return findings
    db = Database(settings.db_path)
    try:
        domains = db.read(accounts.list_domains)
        findings.append(Finding("database", "pass", f"{settings.db_path} ({len(domains)} domains)"))
        disk = disk_status(settings.data_dir)
        ok = disk["status"] == "ok"
        findings.append(Finding("disk", "pass" if ok else "fail",
                                f"{disk['free_bytes'] // (1024 * 1024)} MiB free in {settings.data_dir}",
                                "" if ok else "free space or grow the disk"))
        writable = os.access(settings.data_dir, os.W_OK)
        findings.append(Finding("data dir", "pass" if writable else "fail", str(settings.data_dir),
                                "" if writable else "chown -R openmailserver: the data dir"))
        findings.append(_certificate(settings))
        findings += _listeners(settings, running)
        resolver.install(settings)
        answer = dnscheck.resolver_answers()
        findings.append(Finding("dns resolver", "pass" if answer["status"] == "ok" else "fail",
                                ", ".join(settings.dns_nameservers) or "system resolver",
                                "" if answer["status"] == "ok" else f"fix dns_nameservers: {answer.get('error')}"))
        if answer["status"] == "ok":
            for domain in domains:
                for check in dnscheck.check_domain(settings, domain):
                    fix = ""
                    if check.record:
                        fix = f"publish {check.record['type']} {check.record['name']} \"{check.record['value']}\""
                    findings.append(Finding(f"{domain['name']} {check.name}", check.status, check.detail, fix))
    finally:
        db.close()
    return findings


def as_dicts(findings: list[Finding]) -> list[dict]:
    return [asdict(f) for f in findings]
