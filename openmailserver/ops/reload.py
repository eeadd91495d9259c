"""SIGHUP (`systemctl reload openmailserver`): new TLS certificates, and the settings that may change live.

What a reload does, in order:

1. Build the settings again from every layer (the TOML file, the environment the
   daemon started with, its `--set` flags). A file that does not parse, or names
   an unknown setting, is reported and nothing else changes.
2. Apply the settings in `RUNTIME_SETTINGS`; every listener reads those at use
   time, so the change is real. Any other changed setting (ports, addresses, the
   data directory, limits that listeners copied when they started, ...) is named
   in the log as needing a restart, and the running value is kept.
3. Load the certificate and key again (`tls_cert`/`tls_key`, possibly new paths,
   or the self-signed pair in `data_dir/tls`). They are checked in a scratch
   context first: a broken pair leaves the current certificate in place. New TLS
   handshakes on every listener that shares the runtime's context use the new
   certificate; open sessions keep theirs.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from dataclasses import dataclass, field, fields
from typing import Callable

from .. import tls
from ..config import ConfigError, Settings

log = logging.getLogger(__name__)

# Read at use time through `rt.settings`, so replacing them there takes effect at once.
RUNTIME_SETTINGS = frozenset({"tls_cert", "tls_key", "log_level", "debug_api_enabled", "imap_max_connections",
                              "imap_max_sessions_per_user"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass
class ReloadReport:
    applied: list[str] = field(default_factory=list)
    need_restart: list[str] = field(default_factory=list)
    config_error: str | None = None
    tls_error: str | None = None
    certificate: dict = field(default_factory=dict)


def _changed(old: Settings, new: Settings) -> list[str]:
    return [f.name for f in fields(Settings) if getattr(old, f.name) != getattr(new, f.name)]


def reload(rt, load: Callable[[], Settings] | None) -> ReloadReport:
    """Apply a reload to the runtime `rt`; `load` rebuilds Settings the way the daemon was started."""
    report = ReloadReport()
    current: Settings = rt.settings
    candidate = current
    if load is not None:
        try:
            fresh = load()
        except ConfigError as exc:
            report.config_error = str(exc)
            log.error("reload: configuration error, keeping the running settings: %s", exc)
        else:
            changed = _changed(current, fresh)
            report.applied = [name for name in changed if name in RUNTIME_SETTINGS]
            report.need_restart = [name for name in changed if name not in RUNTIME_SETTINGS]
            candidate = dataclasses.replace(current, **{name: getattr(fresh, name) for name in report.applied})

    try:
        tls.server_context(candidate.cert_path, candidate.key_path)
    except (OSError, ssl.SSLError, ValueError) as exc:
        report.tls_error = f"{candidate.cert_path} / {candidate.key_path}: {exc}"
        log.error("reload: cannot load the TLS certificate %s, keeping the current one", report.tls_error)
        candidate = dataclasses.replace(candidate, tls_cert=current.tls_cert, tls_key=current.tls_key)
        report.applied = [name for name in report.applied if name not in ("tls_cert", "tls_key")]

    rt.settings = candidate
    if candidate.log_level != current.log_level and candidate.log_level.upper() in LOG_LEVELS:
        logging.getLogger().setLevel(candidate.log_level.upper())
    if report.tls_error is None:
        try:
            rt.reload_tls()
        except (OSError, ssl.SSLError, ValueError) as exc:  # the files changed again under us
            report.tls_error = str(exc)
            log.error("reload: loading the TLS certificate failed: %s", exc)
        else:
            report.certificate = tls.certificate_status(candidate.cert_path)
            log.info("reload: TLS certificate %s loaded (expires %s, %s days left)", candidate.cert_path,
                     report.certificate.get("expires_at"), report.certificate.get("days_left"))
    if report.applied:
        log.info("reload: applied %s", ", ".join(report.applied))
    if report.need_restart:
        log.warning("reload: changed settings that take effect only after a restart "
                    "(systemctl restart openmailserver): %s", ", ".join(report.need_restart))
    return report
