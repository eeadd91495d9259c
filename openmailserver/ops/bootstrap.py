"""`openmailserver init`: the data directory, database, TLS certificate, DKIM key, admin key.

Idempotent: every step checks before it creates, and the report says what (if
anything) was created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import tls
from ..config import Settings
from ..core import accounts as core_accounts
from ..store import Database


@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)
    admin_key: str | None = None  # shown once, only when generated now

    @property
    def changed(self) -> bool:
        return bool(self.created) or self.admin_key is not None


def init_data_dir(settings: Settings) -> InitReport:
    report = InitReport()
    for path in (settings.data_dir, settings.mail_root, settings.log_dir, settings.tls_dir,
                 settings.data_dir / "backups"):
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            report.created.append(f"directory {path}")
    os.chmod(settings.data_dir, 0o750)
    new_db = not settings.db_path.exists()
    db = Database(settings.db_path)
    try:
        if new_db:
            report.created.append(f"database {settings.db_path}")
        if not settings.tls_cert and not settings.cert_path.exists():
            tls.write_self_signed(settings.cert_path, settings.key_path, settings.mail_host)
            report.created.append(f"self-signed certificate for {settings.mail_host} in {settings.tls_dir}")
        domain, created = core_accounts.ensure_domain(db, settings.mail_domain)
        if created:
            report.created.append(f"domain {domain['name']} with a 2048-bit DKIM key "
                                  f"(selector {domain['dkim_selector']})")
        report.admin_key = core_accounts.ensure_admin_key(settings, db)
    finally:
        db.close()
    return report
