"""The installer, the systemd unit and the daemon's side of systemd, for real.

One scratch install per module (`deploy/install.sh --root`, building the venv from
this checkout with Debian's Python, as on a fresh server). The installed daemon is
then started the way systemd would start it: exactly the unit's ExecStart= argv,
Environment= and WorkingDirectory= (absolute paths taken under the scratch root),
a NOTIFY_SOCKET this test binds, and the unit's sandbox applied by
support/unit_sandbox.py (read-only system, private capabilities, the system call
filter, MemoryDenyWriteExecute, the address families). Only the ports, the
addresses and the DNS server come from the test, as environment settings.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import httpx
import pytest
from conftest import free_port, quiet_dns
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import systemd_unit
from support.mail import build_message, insecure_tls, wait_for

from openmailserver import tls
from openmailserver.config import Settings

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
UNINSTALL = REPO / "deploy" / "uninstall.sh"
SANDBOX = REPO / "tests" / "support" / "unit_sandbox.py"
# Debian's interpreter: the installer builds the venv from it as on a fresh server, and the
# sandbox needs its python3-seccomp.
SYSTEM_PYTHON = "/usr/bin/python3"
UNIT_PATH = "etc/systemd/system/openmailserver.service"
CONFIG_PATH = "etc/openmailserver/openmailserver.toml"
DATA_DIR = "var/lib/openmailserver"
HOSTNAME = "mx.install.test"
# What systemd puts in a service's environment before Environment= (systemd.exec(5)).
SYSTEMD_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

pytestmark = pytest.mark.timeout(300)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENMAILSERVER_", "NOTIFY_SOCKET"))}


def copy_checkout(target: Path) -> Path:
    """This checkout as it is now (what a release tarball would hold), frozen for the module."""
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(
        ".git", ".venv", "data", "bench", "tests", "docs", "__pycache__", "*.egg-info", "build", ".*cache*"))
    return target


def run_installer(root: Path, source: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(INSTALL), "--root", str(root), "--no-user", "--no-start", "--source",
                           str(source), "--python", SYSTEM_PYTHON, "--hostname", HOSTNAME, *extra],
                          capture_output=True, text=True, env=_clean_env(), timeout=240)


@dataclass
class Install:
    root: Path
    source: Path
    output: str
    admin_key: str

    @property
    def unit_file(self) -> Path:
        return self.root / UNIT_PATH

    def under_root(self, value: str) -> str:
        """An absolute path of the unit, as installed in the scratch root."""
        return f"{self.root}{value}" if value.startswith("/") else value


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Install:
    root = tmp_path_factory.mktemp("scratch-root")
    # A copy, so that the idempotence check sees the same source even while the working
    # tree is being edited.
    source = copy_checkout(tmp_path_factory.mktemp("source") / "openmailserver")
    result = run_installer(root, source)
    assert result.returncode == 0, f"install.sh failed:\n{result.stdout}\n{result.stderr}"
    key = re.search(r"Admin API key[^\n]*\n\s*(om_\w+)", result.stdout)
    assert key, result.stdout
    # The part of a real system that `systemd-analyze verify --root` looks at besides our
    # unit: systemd's own units (sysinit.target ...) and ExecReload's /bin/kill.
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/kill", root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")
    return Install(root, source, result.stdout, key.group(1))


# -- the service as systemd runs it -----------------------------------------------------


class NotifySocket:
    """The service manager's end of sd_notify: a datagram socket at a path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(self, assignment: str, proc: subprocess.Popen, timeout: float = 30.0) -> dict[str, str]:
        """The first message (after those already seen) carrying `assignment`, e.g. READY=1."""
        name, _, value = assignment.partition("=")
        for message in self.messages:
            if message.get(name) == value and not message.get("_seen"):
                message["_seen"] = "1"
                return message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(0.2)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                if proc.poll() is not None:
                    raise AssertionError(f"the service exited with {proc.returncode} before {assignment}")
                continue
            message = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append(message)
            if message.get(name) == value:
                message["_seen"] = "1"
                return message
        raise AssertionError(f"no {assignment} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@dataclass
class Service:
    proc: subprocess.Popen
    notify: NotifySocket
    log_path: Path
    ports: dict[str, int]
    unit: dict[str, list[str]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api_port']}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        return self.proc.returncode


def start_service(installed: Install, tmp_path: Path) -> Service:
    """Start the installed daemon from its unit, under the unit's sandbox."""
    unit = systemd_unit.service(installed.unit_file)
    assert systemd_unit.last(unit, "Type") == "notify"
    argv = [installed.under_root(arg) for arg in systemd_unit.exec_argv(systemd_unit.last(unit, "ExecStart"))]
    env = dict(SYSTEMD_BASE_ENV)
    env.update({name: installed.under_root(value)
                for name, value in systemd_unit.environment(unit.get("Environment", [])).items()})
    notify = NotifySocket(tmp_path / "notify.sock")
    env["NOTIFY_SOCKET"] = str(notify.path)
    ports = {name: free_port() for name in ("smtp_port", "submission_port", "submission_starttls_port",
                                             "imap_port", "imaps_port", "api_port")}
    test_settings = {"bind": "127.0.0.1", "api_host": "127.0.0.1", "dns_nameservers": quiet_dns().address, **ports}
    env.update({f"OPENMAILSERVER_{name.upper()}": str(value) for name, value in test_settings.items()})
    log_path = tmp_path / "service.out"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([SYSTEM_PYTHON, str(SANDBOX), "--unit", str(installed.unit_file),
                                 "--root", str(installed.root), "--", *argv],
                                env=env, cwd=installed.under_root(systemd_unit.last(unit, "WorkingDirectory")),
                                stdout=out, stderr=subprocess.STDOUT)
    return Service(proc, notify, log_path, ports, unit)


@pytest.fixture
def service(installed, tmp_path):
    started: list[Service] = []

    def start() -> Service:
        started.append(start_service(installed, tmp_path))
        return started[-1]

    yield start
    for svc in started:
        svc.stop()


def served_certificate(port: int, starttls: bool = False) -> bytes:
    """The DER certificate a new TLS handshake on `port` presents."""
    if starttls:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=insecure_tls())
            return client.sock.getpeercert(binary_form=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with insecure_tls().wrap_socket(raw) as conn:
            return conn.getpeercert(binary_form=True)


def der(cert_path: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)


# -- the installed tree ---------------------------------------------------------------------


def test_install_creates_venv_config_data_dir_and_unit(installed):
    root = installed.root
    assert "openmailserver install: done" in installed.output
    for expected in ("created venv /opt/openmailserver/venv", "wrote /etc/openmailserver/openmailserver.toml",
                     "installed /etc/systemd/system/openmailserver.service", "init: created database",
                     "linked /var/lib/openmailserver/logs -> /var/log/openmailserver"):
        assert expected in installed.output
    # The unit is the repository's (default prefix), installed where systemd reads it.
    assert installed.unit_file.read_text() == (installed.source / "systemd/openmailserver.service").read_text()
    # The venv was built from this checkout, pinned by constraints.txt.
    python = root / "opt/openmailserver/venv/bin/python"
    assert os.access(root / "opt/openmailserver/venv/bin/openmailserver", os.X_OK)
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    pins = dict(line.lower().split("==") for line in (installed.source / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    installed_versions = dict(line.lower().split("==") for line in frozen.splitlines() if "==" in line)
    for name in ("aiosmtplib", "cryptography", "starlette", "uvicorn", "dkimpy", "argon2-cffi"):
        assert installed_versions[name] == pins[name], name
    package = subprocess.run([str(python), "-I", "-c", "import openmailserver; print(openmailserver.__file__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert Path(package).is_relative_to(root / "opt/openmailserver/venv")
    assert (Path(package).parent / "ops/systemd.py").read_bytes() == \
        (installed.source / "openmailserver/ops/systemd.py").read_bytes()
    assert installed.output.startswith(f"openmailserver install: source {installed.source} -> {root}")
    # The config: valid TOML, every setting documented, data_dir and hostname set.
    config_file = root / CONFIG_PATH
    assert oct(config_file.stat().st_mode & 0o777) == "0o640"
    config = tomllib.loads(config_file.read_text())
    assert config == {"data_dir": "/var/lib/openmailserver", "hostname": HOSTNAME}
    text = config_file.read_text()
    for f in fields(Settings):
        assert re.search(rf"^(# )?{f.name} = ", text, re.M), f"{f.name} missing from the config template"
        assert f.metadata["doc"].split()[0] in text
    # The data dir, initialised by `openmailserver init` against that config.
    data = root / DATA_DIR
    assert oct(data.stat().st_mode & 0o777) == "0o750"
    assert (data / "openmailserver.db").is_file() and (data / "tls/cert.pem").is_file()
    assert (data / "logs").resolve() == (root / "var/log/openmailserver").resolve()
    assert oct((root / "var/log/openmailserver").stat().st_mode & 0o777) == "0o750"


def _snapshot(root: Path) -> dict[str, tuple]:
    state = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        st = path.lstat()
        state[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


def test_second_install_changes_nothing(installed):
    before = _snapshot(installed.root)
    result = run_installer(installed.root, installed.source)
    assert result.returncode == 0, result.stderr
    assert "openmailserver install: nothing changed" in result.stdout, result.stdout
    assert not re.search(r"^\s*changed\s", result.stdout, re.M), result.stdout
    assert "Admin API key" not in result.stdout
    after = _snapshot(installed.root)
    # SQLite may touch its own files when `init` opens the database (its -wal/-shm files come
    # and go, so the directory's mtime moves too); nothing else does.
    database = {p for p in set(before) | set(after) if p.startswith(f"{DATA_DIR}/openmailserver.db")}
    for snapshot in (before, after):
        snapshot[DATA_DIR] = snapshot[DATA_DIR][:2]
    assert {k: v for k, v in before.items() if k not in database} == \
        {k: v for k, v in after.items() if k not in database}


def test_install_from_changed_source_upgrades_the_venv_and_keeps_the_config(installed, tmp_path):
    source = tmp_path / "checkout"
    shutil.copytree(installed.source, source)
    marker = f"# upgrade marker {time.time_ns()}\n"
    with open(source / "openmailserver" / "ops" / "systemd.py", "a") as fh:
        fh.write(marker)
    config_before = (installed.root / CONFIG_PATH).read_bytes()
    upgrade = run_installer(installed.root, source)
    assert upgrade.returncode == 0, upgrade.stderr
    changes = re.findall(r"^\s*changed\s+(.*)$", upgrade.stdout, re.M)
    assert changes == ["installed openmailserver 0.1.0 and pinned dependencies into /opt/openmailserver/venv"]
    site = next((installed.root / "opt/openmailserver/venv/lib").glob("python3*/site-packages/openmailserver"))
    assert (site / "ops" / "systemd.py").read_text().endswith(marker)
    assert (installed.root / CONFIG_PATH).read_bytes() == config_before
    # The install now follows the upgraded checkout (only a comment differs).
    installed.source = source


def test_installer_refuses_what_it_cannot_do(tmp_path):
    not_a_checkout = subprocess.run(["sh", str(INSTALL), "--root", str(tmp_path / "r"), "--no-user",
                                     "--source", str(tmp_path)], capture_output=True, text=True, env=_clean_env())
    assert not_a_checkout.returncode != 0 and "not an openmailserver checkout" in not_a_checkout.stderr
    unknown = subprocess.run(["sh", str(INSTALL), "--frobnicate"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "unknown option: --frobnicate" in unknown.stderr
    short_name = subprocess.run(["sh", str(INSTALL), "--root", str(tmp_path / "r"), "--no-user",
                                 "--python", SYSTEM_PYTHON, "--hostname", "mx"],
                                capture_output=True, text=True, env=_clean_env())
    # Checked before anything is changed: no venv was built.
    assert short_name.returncode != 0 and "'mx' is not a fully qualified host name" in short_name.stderr
    assert not (tmp_path / "r/opt").exists()


# -- the unit ---------------------------------------------------------------------------------


def _verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", unit],
                          capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_accepts_the_installed_unit(installed):
    result = _verify(installed.root, "openmailserver.service")
    # verify exits 0 on mere warnings (an unknown key, a bad value): the unit must produce none.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr
    # The same check does catch a broken unit (a misspelt key, a binary that is not there).
    broken = installed.root / "etc/systemd/system/openmailserver-broken.service"
    broken.write_text(installed.unit_file.read_text().replace("ProtectSystem=", "ProtectSytem=")
                      .replace("venv/bin/openmailserver", "venv/bin/openmailserverd"))
    try:
        failed = _verify(installed.root, "openmailserver-broken.service")
    finally:
        broken.unlink()
    assert "Unknown key 'ProtectSytem'" in failed.stderr
    assert failed.returncode != 0 and "openmailserverd is not executable" in failed.stderr
    # The sandbox stays tight: systemd's own exposure score is 2.0 or better ("OK").
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--root={installed.root}",
                               "--threshold=20", "--no-pager", "openmailserver.service"],
                              capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-3000:] + security.stderr
    assert "Overall exposure level for openmailserver.service" in security.stdout


def test_unit_settings(installed):
    unit = systemd_unit.service(installed.unit_file)
    one = {key: systemd_unit.last(unit, key) for key in unit}
    assert one["User"] == one["Group"] == "openmailserver"
    assert one["ExecStart"] == ("/opt/openmailserver/venv/bin/openmailserver serve "
                                "--config /etc/openmailserver/openmailserver.toml")
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Type"] == "notify" and one["Restart"] == "on-failure"
    assert one["AmbientCapabilities"] == one["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert (one["StateDirectory"], one["ConfigurationDirectory"], one["LogsDirectory"]) == ("openmailserver",) * 3
    assert systemd_unit.environment(unit["Environment"])["OPENMAILSERVER_DATA_DIR"] == "/var/lib/openmailserver"
    assert one["ProtectSystem"] == "strict" and one["TimeoutStopSec"] == "15" and one["LimitNOFILE"] == "65536"
    for key in ("ProtectHome", "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "MemoryDenyWriteExecute",
                "LockPersonality", "RestrictNamespaces", "ProtectKernelTunables", "ProtectKernelModules"):
        assert systemd_unit.boolean(unit, key), key
    assert systemd_unit.words(unit, "RestrictAddressFamilies") == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "@system-service" in unit["SystemCallFilter"]


# -- the daemon under the unit ------------------------------------------------------------------


def test_unit_execstart_serves_under_the_sandbox_and_notifies_systemd(installed, service):
    svc = service()
    ready = svc.notify.wait_for("READY=1", svc.proc)
    # READY=1 means every listener is up: /health answers at once, with no retry.
    health = httpx.get(f"{svc.api_url}/health", timeout=5)
    assert health.status_code == 200, health.text
    assert set(health.json()["listeners"]) >= {"smtp", "submission", "submission_starttls", "api"}
    assert all(check["status"] == "ok" for check in health.json()["listeners"].values())
    assert ready["STATUS"].startswith("serving smtp ")
    assert str(svc.ports["api_port"]) in ready["STATUS"]
    # It really runs inside the unit's sandbox: only CAP_NET_BIND_SERVICE, no new privileges,
    # seccomp filters for the syscall list, W^X memory and the address families.
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{svc.proc.pid}/status").read_text().splitlines()
                  if ":\t" in line)
    assert int(status["CapEff"], 16) == 1 << 10 and int(status["CapBnd"], 16) == 1 << 10
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp_filters"].strip() == "3"
    # The data dir comes from the unit's Environment=, the logs go to LogsDirectory through the link.
    assert health.json()["disk"]["path"] == str(installed.root / DATA_DIR)
    log_file = installed.root / "var/log/openmailserver/openmailserver.log"
    assert wait_for(lambda: log_file.is_file() and "listening: api" in log_file.read_text())
    # Work that needs argon2 (cffi), TLS and SQLite, under MemoryDenyWriteExecute and the filter:
    # the admin key `init` printed during the install creates a mailbox, mail arrives over STARTTLS.
    with httpx.Client(base_url=svc.api_url, headers={"X-OpenMailserver-Key": installed.admin_key},
                      timeout=30) as api:
        created = api.post("/v1/mailboxes", json={"local_part": "postmaster", "domain": "install.test",
                                                  "password": "correct horse battery staple"})
        assert created.status_code == 201, created.text
    with smtplib.SMTP("127.0.0.1", svc.ports["smtp_port"], timeout=30) as client:
        client.starttls(context=insecure_tls())
        client.sendmail("someone@elsewhere.test", ["postmaster@install.test"],
                        build_message("someone@elsewhere.test", "postmaster@install.test", subject="installed"))
    with smtplib.SMTP("127.0.0.1", svc.ports["submission_starttls_port"], timeout=30) as client:
        client.starttls(context=insecure_tls())
        client.login("postmaster@install.test", "correct horse battery staple")
    inbox = installed.root / DATA_DIR / "mail/install.test/postmaster/new"
    assert any(b"Subject: installed" in p.read_bytes() for p in inbox.iterdir())
    # SIGTERM (systemctl stop): STOPPING=1, then a clean exit well within TimeoutStopSec.
    stop_timeout = int(systemd_unit.last(svc.unit, "TimeoutStopSec"))
    started = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    svc.notify.wait_for("STOPPING=1", svc.proc, timeout=stop_timeout)
    assert svc.proc.wait(timeout=stop_timeout) == 0, svc.output()
    assert time.monotonic() - started < 10
    assert "Traceback" not in svc.output()


def test_sighup_reloads_certificates_and_keeps_a_broken_pair_out(installed, service, tmp_path):
    svc = service()
    svc.notify.wait_for("READY=1", svc.proc)
    tls_dir = installed.root / DATA_DIR / "tls"
    original = der(tls_dir / "cert.pem")
    assert served_certificate(svc.ports["submission_port"]) == original
    assert served_certificate(svc.ports["smtp_port"], starttls=True) == original

    fresh = tmp_path / "fresh"
    tls.write_self_signed(fresh / "cert.pem", fresh / "key.pem", HOSTNAME)
    # First only the certificate: it does not match the key, so the reload must keep the old pair.
    shutil.copy(fresh / "cert.pem", tls_dir / "cert.pem")
    svc.proc.send_signal(signal.SIGHUP)
    reloading = svc.notify.wait_for("RELOADING=1", svc.proc)
    assert int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    svc.notify.wait_for("READY=1", svc.proc)
    assert "cannot load the TLS certificate" in svc.output()
    assert served_certificate(svc.ports["submission_port"]) == original
    # Then the matching key (how certbot's renewal lands): new handshakes get the new certificate.
    shutil.copy(fresh / "key.pem", tls_dir / "key.pem")
    svc.proc.send_signal(signal.SIGHUP)
    svc.notify.wait_for("RELOADING=1", svc.proc)
    svc.notify.wait_for("READY=1", svc.proc)
    assert served_certificate(svc.ports["submission_port"]) == der(fresh / "cert.pem")
    assert served_certificate(svc.ports["smtp_port"], starttls=True) == der(fresh / "cert.pem")
    assert served_certificate(svc.ports["submission_starttls_port"], starttls=True) == der(fresh / "cert.pem")
    assert "reload: TLS certificate" in svc.output()
    assert httpx.get(f"{svc.api_url}/health", timeout=5).status_code == 200


# -- SIGHUP and certificate expiry on a plain daemon ------------------------------------------------


def _short_lived_pair(directory: Path, days: int) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=80))
            .not_valid_after(now + dt.timedelta(days=days, hours=12)).sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / "cert.pem", directory / "key.pem"


def test_health_warns_14_days_before_the_certificate_expires(make_daemon, tmp_path):
    cert, key = _short_lived_pair(tmp_path / "certbot", days=10)
    daemon = make_daemon(tls_cert=str(cert), tls_key=str(key))
    health = httpx.get(f"{daemon.api_url}/health").json()
    assert health["status"] == "ok"
    assert health["certificate"]["status"] == "warn" and health["certificate"]["days_left"] == 10
    assert health["certificate"]["path"] == str(cert)
    assert served_certificate(int(daemon.settings["submission_port"])) == der(cert)
    # The renewed certificate lands in the same files; SIGHUP loads it, health is clear again.
    tls.write_self_signed(cert, key, "localhost")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: served_certificate(int(daemon.settings["submission_port"])) == der(cert))
    renewed = httpx.get(f"{daemon.api_url}/health").json()["certificate"]
    assert renewed["status"] == "ok" and renewed["days_left"] >= 800
    # An expired certificate fails the health check.
    _short_lived_pair(tmp_path / "certbot", days=-2)
    expired = httpx.get(f"{daemon.api_url}/health")
    assert expired.status_code == 503 and expired.json()["certificate"]["status"] == "fail"


def test_sighup_applies_live_settings_and_names_those_needing_a_restart(make_daemon, tmp_path):
    config = tmp_path / "openmailserver.toml"
    config.write_text('debug_api_enabled = true\nlog_level = "info"\nmax_recipients = 100\n')
    daemon = make_daemon(config=str(config))
    with daemon.http() as client:
        assert client.get("/v1/debug/config").json()["max_recipients"] == 100

        config.write_text('debug_api_enabled = false\nlog_level = "debug"\nmax_recipients = 5\n')
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: applied" in daemon.output())
        assert client.get("/v1/debug/config").status_code == 404  # applied at once
        assert re.search(r"reload: applied .*debug_api_enabled", daemon.output())
        assert re.search(r"restart .*: max_recipients", daemon.output())

        # A file that does not load changes nothing, and the daemon keeps serving.
        config.write_text('debug_api_enabled = true\nno_such_setting = 1\n')
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload: configuration error" in daemon.output())
        assert "no_such_setting" in daemon.output()
        assert client.get("/v1/debug/config").status_code == 404
        assert httpx.get(f"{daemon.api_url}/health").status_code == 200

        config.write_text('debug_api_enabled = true\nlog_level = "info"\nmax_recipients = 100\n')
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: client.get("/v1/debug/config").status_code == 200)
        # The running value of a restart-only setting never changed.
        assert client.get("/v1/debug/config").json()["max_recipients"] == 100
    assert daemon.proc.poll() is None


# -- uninstall (last: it removes the module's install) ----------------------------------------------


def test_uninstall_keeps_data_and_config_unless_purged(installed):
    root = installed.root
    result = subprocess.run(["sh", str(UNINSTALL), "--root", str(root)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not installed.unit_file.exists() and not (root / "opt/openmailserver").exists()
    assert (root / DATA_DIR / "openmailserver.db").is_file() and (root / CONFIG_PATH).is_file()
    assert "kept     /var/lib/openmailserver (delete it with --purge)" in result.stdout
    purge = subprocess.run(["sh", str(UNINSTALL), "--root", str(root), "--purge"], capture_output=True, text=True)
    assert purge.returncode == 0, purge.stderr
    for path in (DATA_DIR, "etc/openmailserver", "var/log/openmailserver"):
        assert not (root / path).exists()
    again = subprocess.run(["sh", str(UNINSTALL), "--root", str(root), "--purge"], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to do" in again.stdout
