"""Settings: defaults < dev profile < TOML file < OPENMAILSERVER_* env < CLI flags.

This is the only module that reads the environment. Every setting has one name,
one type and one line of documentation; `docs/configuration.md` is generated
from the table below (`render_reference`) and a test keeps it current.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "OPENMAILSERVER_"
CONFIG_FILE_NAME = "openmailserver.toml"
SYSTEM_CONFIG = Path("/etc/openmailserver") / CONFIG_FILE_NAME

MiB = 1024 * 1024

# Every listener by name, with the setting its port comes from (named in error messages).
LISTENER_PORTS = {
    "smtp": "smtp_port",
    "submission": "submission_port",
    "submission_starttls": "submission_starttls_port",
    "imap": "imap_port",
    "imaps": "imaps_port",
    "api": "api_port",
}


class ConfigError(Exception):
    """A setting is unknown or has a value of the wrong shape."""


def _doc(text: str, secret: bool = False, kind: str = "") -> dict[str, Any]:
    return {"doc": text, "secret": secret, "kind": kind}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(
        default=Path("/var/lib/openmailserver"),
        metadata=_doc("Directory holding the database, Maildirs, keys, TLS files and logs."),
    )
    hostname: str = field(
        default="",
        metadata=_doc("Canonical mail host name (HELO/EHLO name, TLS certificate, MX target). "
                      "Empty means this machine's fully qualified name."),
    )
    primary_domain: str = field(
        default="",
        metadata=_doc("The first mail domain; created with a DKIM key by `init`. "
                      "Empty means `hostname` without its first label."),
    )
    bind: str = field(default="0.0.0.0", metadata=_doc("Address the mail listeners (SMTP, IMAP) bind to."))
    workers: int = field(
        default=0, metadata=_doc("Worker processes, each serving every listener. 0: one per CPU this process "
                                 "may run on; 1: a single worker."))
    smtp_port: int = field(default=25, metadata=_doc("SMTP MX listener (0 disables it).", kind="port"))
    submission_port: int = field(
        default=465, metadata=_doc("Submission with implicit TLS (0 disables it).", kind="port"))
    submission_starttls_port: int = field(
        default=587, metadata=_doc("Submission with STARTTLS (0 disables it).", kind="port"))
    imap_port: int = field(default=143, metadata=_doc("IMAP with STARTTLS (0 disables it).", kind="port"))
    imaps_port: int = field(default=993, metadata=_doc("IMAP with implicit TLS (0 disables it).", kind="port"))
    api_host: str = field(default="127.0.0.1", metadata=_doc("Address the HTTP API binds to."))
    api_port: int = field(default=8787, metadata=_doc("HTTP API port (0 disables it).", kind="port"))
    public_api_url: str = field(
        default="",
        metadata=_doc("Base URL clients use to reach the HTTP API (e.g. `https://mail.example.com` behind a "
                      "reverse proxy): used in attachment links of events and in `openmailserver skill`. "
                      "Empty: `http://api_host:api_port`."),
    )
    admin_api_key: str = field(
        default="",
        metadata=_doc("When set, this string is the admin API key (stored only as a hash). "
                      "When empty, `init` generates one and prints it once.", secret=True),
    )
    tls_cert: str = field(
        default="",
        metadata=_doc("PEM certificate chain for SMTP/IMAP TLS. Empty: a self-signed "
                      "certificate for `hostname` in `data_dir/tls/`."),
    )
    tls_key: str = field(default="", metadata=_doc("PEM private key matching `tls_cert`."))
    dns_nameservers: tuple[str, ...] = field(
        default=(),
        metadata=_doc("DNS servers as `ip` or `ip:port`, comma-separated in env. Empty: the system resolver."),
    )
    remote_smtp_port: int = field(
        default=25, metadata=_doc("Port outbound delivery connects to on remote MX hosts.", kind="port"))
    relay_host: str = field(default="", metadata=_doc("Optional smarthost `host:port`; all outbound mail goes there."))
    relay_username: str = field(default="", metadata=_doc("Username for SMTP AUTH at `relay_host` (optional)."))
    relay_password: str = field(
        default="", metadata=_doc("Password for SMTP AUTH at `relay_host`.", secret=True))
    retry_schedule: str = field(
        default="5m,10m,30m,1h,2h,4h,8h",
        metadata=_doc("Delays between delivery attempts after the first (s, m, h, d suffixes); "
                      "the last one repeats until `queue_lifetime`.", kind="durations"))
    queue_lifetime: int = field(
        default=5 * 86400, metadata=_doc("How long a message may stay queued before it bounces "
                                         "(seconds, or with s/m/h/d suffix).", kind="duration"))
    delivery_concurrency: int = field(default=20, metadata=_doc("Outbound SMTP connections in all."))
    delivery_concurrency_per_domain: int = field(
        default=4, metadata=_doc("Outbound SMTP connections to one destination domain."))
    message_size_limit: int = field(
        default=25 * MiB, metadata=_doc("Largest message accepted, in bytes (suffixes K, M, G allowed).", kind="size"))
    max_recipients: int = field(default=100, metadata=_doc("Most recipients accepted in one SMTP transaction."))
    max_sends_per_hour: int = field(default=100, metadata=_doc("Messages one mailbox may send per hour."))
    default_quota: int = field(
        default=0, metadata=_doc("Quota in bytes for new mailboxes when none is given (0 = unlimited).", kind="size"))
    smtp_max_connections: int = field(default=500, metadata=_doc("Simultaneous SMTP connections, all listeners."))
    smtp_max_connections_per_ip: int = field(default=50, metadata=_doc("Simultaneous SMTP connections from one IP."))
    smtp_idle_timeout: int = field(default=300, metadata=_doc("Seconds an SMTP session may stay idle."))
    imap_max_connections: int = field(
        default=5000, metadata=_doc("Simultaneous IMAP connections, both listeners.", kind="count"))
    imap_max_sessions_per_user: int = field(
        default=1000, metadata=_doc("Simultaneous logged-in IMAP sessions of one mailbox (clients, devices, tools).",
                                    kind="count"))
    auth_failure_limit: int = field(
        default=10, metadata=_doc("Failed logins (SMTP AUTH, IMAP) from one IP within `auth_failure_window` "
                                  "that block it.", kind="count"))
    auth_failure_window: int = field(
        default=300, metadata=_doc("Seconds (or s/m/h/d) over which failed logins are counted.", kind="duration"))
    auth_block_time: int = field(
        default=300, metadata=_doc("How long (s/m/h/d) a blocked IP is refused without its password being checked.",
                                   kind="duration"))
    work_threads: int = field(
        default=16, metadata=_doc("Threads for blocking work: password hashing, DKIM/RSA, DNS, parsing.",
                                  kind="count"))
    store_threads: int = field(
        default=16, metadata=_doc("Threads for message-file I/O that kernel AIO does not take (large deliveries).",
                                  kind="count"))
    db_read_threads: int = field(
        default=4, metadata=_doc("Threads reading the index beside its one writer.", kind="count"))
    dmarc_enforce: bool = field(
        default=True,
        metadata=_doc("Reject (550 5.7.1) mail failing DMARC for a `p=reject` domain; false only marks it."),
    )
    webhook_retry_schedule: str = field(
        default="5s,5m,30m,2h,5h,10h,10h",
        metadata=_doc("Delays before each webhook retry (with jitter); after the last one the delivery "
                      "is abandoned.", kind="durations"))
    webhook_timeout: int = field(default=15, metadata=_doc("Seconds a webhook endpoint has to answer 2xx."))
    webhook_disable_after: int = field(
        default=5 * 86400, metadata=_doc("An endpoint failing this long (s/m/h/d) is disabled.", kind="duration"))
    webhook_allowed_hosts: tuple[str, ...] = field(
        default=(), metadata=_doc("Webhook hosts or IPs allowed even though they resolve to loopback or "
                                  "private addresses (the SSRF guard refuses those otherwise)."))
    backup_encryption_key: str = field(
        default="", metadata=_doc("Passphrase that encrypts backups (AES-256-GCM).", secret=True))
    debug_api_enabled: bool = field(default=True, metadata=_doc("Serve the `/v1/debug/*` endpoints."))
    log_level: str = field(default="info", metadata=_doc("debug, info, warning or error."))

    # ---- derived values -------------------------------------------------

    @property
    def mail_host(self) -> str:
        return self.hostname or socket.getfqdn().lower()

    @property
    def mail_domain(self) -> str:
        if self.primary_domain:
            return self.primary_domain
        labels = self.mail_host.split(".")
        return ".".join(labels[1:]) if len(labels) > 2 else self.mail_host

    @property
    def api_base_url(self) -> str:
        if self.public_api_url:
            return self.public_api_url.rstrip("/")
        host = self.api_host if self.api_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://[{host}]:{self.api_port}" if ":" in host else f"http://{host}:{self.api_port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "openmailserver.db"

    @property
    def mail_root(self) -> Path:
        return self.data_dir / "mail"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def cert_path(self) -> Path:
        return Path(self.tls_cert) if self.tls_cert else self.tls_dir / "cert.pem"

    @property
    def key_path(self) -> Path:
        return Path(self.tls_key) if self.tls_key else self.tls_dir / "key.pem"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "openmailserver.pid"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "openmailserver.lock"

    @property
    def metrics_dir(self) -> Path:
        """Where the workers of a daemon keep their metrics (prometheus_client multiprocess mode):
        in memory (/dev/shm) where there is one, since those files are memory-mapped and grow,
        and a mapped page that a full disk cannot back kills its process with SIGBUS."""
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            tag = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
            return shm / f"openmailserver-{os.getuid()}-{tag}"
        return self.data_dir / "run" / "metrics"

    @property
    def board_path(self) -> Path:
        return self.data_dir / "openmailserver.board"

    def listeners(self) -> dict[str, tuple[str, int]]:
        """Every enabled listener by name: (address, port)."""
        table = {name: (self.api_host if name == "api" else self.bind, getattr(self, setting))
                 for name, setting in LISTENER_PORTS.items()}
        return {name: addr for name, addr in table.items() if addr[1]}

    def redacted(self) -> dict[str, Any]:
        """Effective settings as JSON-able values, secrets replaced."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = "(set)" if value else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


# The `--dev` profile: everything on loopback and unprivileged ports, data in ./data.
DEV_PROFILE: dict[str, Any] = {
    "data_dir": "./data",
    "hostname": "localhost",
    "primary_domain": "example.test",
    "bind": "127.0.0.1",
    "smtp_port": 2525,
    "submission_port": 4465,
    "submission_starttls_port": 2587,
    "imap_port": 1143,
    "imaps_port": 1993,
    "api_host": "127.0.0.1",
    "api_port": 8787,
}

_FIELDS = {f.name: f for f in fields(Settings)}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.I)
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.I)


def _parse_size(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"setting {name!r}: expected a size in bytes, got {raw!r}")
    if isinstance(raw, int):
        value = raw
    else:
        match = _SIZE_RE.match(str(raw))
        if not match:
            raise ConfigError(f"setting {name!r}: expected a size like 25M, got {raw!r}")
        unit = (match.group(2) or "b")[0].lower()
        value = int(match.group(1)) * {"b": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}[unit]
    if value < 0:
        raise ConfigError(f"setting {name!r}: must not be negative")
    return value


def parse_duration(text: str | int) -> int:
    """`90`, `90s`, `5m`, `2h`, `5d` -> seconds; ValueError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2).lower()]


def parse_durations(text: str) -> list[int]:
    values = [parse_duration(part) for part in str(text).split(",") if part.strip()]
    if not values:
        raise ValueError("empty schedule")
    return values


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML/env/CLI value into the field's type, naming the setting on error."""
    f = _FIELDS[name]
    kind = f.metadata.get("kind")
    default = f.default
    if kind == "size":
        return _parse_size(name, raw)
    if kind in ("duration", "durations"):
        try:
            return parse_duration(raw) if kind == "duration" else (parse_durations(raw) and str(raw))
        except ValueError:
            raise ConfigError(f"setting {name!r}: expected a duration like 30s, 5m, 2h or 5d, got {raw!r}") \
                from None
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"setting {name!r}: expected true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            value = int(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None:
            raise ConfigError(f"setting {name!r}: expected an integer, got {raw!r}")
        if kind == "port" and not 0 <= value <= 65535:
            raise ConfigError(f"setting {name!r}: port {value} is outside 0-65535")
        if value < 0:
            raise ConfigError(f"setting {name!r}: must not be negative")
        if kind == "count" and value < 1:
            raise ConfigError(f"setting {name!r}: must be at least 1")
        return value
    if isinstance(default, tuple):
        if isinstance(raw, str):
            items = [part.strip() for part in raw.split(",")]
        elif isinstance(raw, (list, tuple)):
            items = [str(part).strip() for part in raw]
        else:
            raise ConfigError(f"setting {name!r}: expected a list, got {raw!r}")
        return tuple(item for item in items if item)
    if isinstance(default, Path):
        if not isinstance(raw, (str, Path)) or not str(raw):
            raise ConfigError(f"setting {name!r}: expected a path, got {raw!r}")
        return Path(raw)
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise ConfigError(f"setting {name!r}: expected a string, got {raw!r}")
    return str(raw)


def find_config_file(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get(ENV_PREFIX + "CONFIG"):
        return Path(environ[ENV_PREFIX + "CONFIG"])
    for candidate in (Path.cwd() / CONFIG_FILE_NAME, SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    for key in data:
        if key not in _FIELDS:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
    return data


def load_settings(
    *,
    config_file: str | Path | None = None,
    dev: bool = False,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective Settings from every layer, lowest first."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if dev:
        values.update({k: _coerce(k, v) for k, v in DEV_PROFILE.items()})
    path = find_config_file(config_file, environ)
    if path is not None:
        values.update({k: _coerce(k, v) for k, v in read_toml(path).items()})
    for name in _FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name])
    for name, raw in (overrides or {}).items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        if raw is not None:
            values[name] = _coerce(name, raw)
    settings = Settings(**values)
    # Relative data directories are anchored where the command was started.
    return dataclasses.replace(settings, data_dir=settings.data_dir.expanduser().absolute())


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`NAME=VALUE` strings from `--set` flags."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError(f"--set expects NAME=VALUE, got {pair!r}")
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        out[name] = value
    return out


def render_reference() -> str:
    """The configuration reference (docs/configuration.md), generated from Settings."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from openmailserver/config.py by `openmailserver docs configuration`; "
        "a test fails when this file is stale. -->",
        "",
        "Settings are read in this order, each layer overriding the one before: built-in",
        "defaults, the `--dev` profile (when given), the TOML file (`--config PATH`, else",
        f"`$OPENMAILSERVER_CONFIG`, else `./{CONFIG_FILE_NAME}`, else `{SYSTEM_CONFIG}`),",
        "environment variables `OPENMAILSERVER_<NAME>`, and `--set NAME=VALUE` flags.",
        "An unknown key in the TOML file is an error that names the key.",
        "",
        "| setting | env | default | dev profile | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ", ".join(default) or "(empty)"
        elif default == "":
            default = "(empty)"
        dev = DEV_PROFILE.get(f.name, "")
        lines.append(
            f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | `{default}` | "
            f"{f'`{dev}`' if dev != '' else ''} | {f.metadata['doc']} |"
        )
    lines.append("")
    return "\n".join(lines)
