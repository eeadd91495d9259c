"""Shared fixtures: the real daemon as a subprocess, and a loopback DNS server.

`make_daemon(**settings)` starts `python -m openmailserver serve` on ephemeral
loopback ports with a temporary data dir and a known admin key; every daemon
is stopped at teardown. Settings are passed as `OPENMAILSERVER_*` environment
variables, the way a service manager would.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from support.dnsserver import DNSServer

PORT_SETTINGS = ("smtp_port", "submission_port", "submission_starttls_port", "imap_port",
                 "imaps_port", "api_port")
START_TIMEOUT = 60.0  # generous: a loaded 2-core machine starts a daemon slowly


_handed_out: set[int] = set()


def free_port() -> int:
    """A port for a daemon listener, from below the kernel's ephemeral range (32768+) so that no
    client connection of the test run can take it between our check and the daemon's bind."""
    while True:
        port = random.randrange(20000, 32768)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def new_admin_key() -> str:
    return "om_" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(40))


_quiet_dns: DNSServer | None = None


def quiet_dns() -> DNSServer:
    """A loopback DNS server with an empty zone: the default for every daemon, so no
    test ever asks a resolver outside this machine."""
    global _quiet_dns
    if _quiet_dns is None:
        _quiet_dns = DNSServer().start()
    return _quiet_dns


class Daemon:
    """One openmailserver process with its own data dir and ports."""

    def __init__(self, base: Path, name: str, **settings: Any) -> None:
        self.name = name
        self.data_dir = base / name
        self.admin_key = new_admin_key()
        self.settings: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "hostname": f"mx.{name}.test",
            "primary_domain": f"{name}.test",
            "bind": "127.0.0.1",
            "api_host": "127.0.0.1",
            "admin_api_key": self.admin_key,
            "smtp_idle_timeout": 60,
            "dns_nameservers": [quiet_dns().address],
            # Two worker processes, as on a two-core machine: every test runs against the
            # supervisor and its workers, and multi-session tests meet across them.
            "workers": 2,
        }
        for port_name in PORT_SETTINGS:
            self.settings[port_name] = free_port()
        self.settings.update(settings)
        self.proc: subprocess.Popen | None = None
        self.log_path = base / f"{name}.out"

    # -- process control -----------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAILSERVER_")}
        for key, value in self.settings.items():
            if isinstance(value, (list, tuple)):
                value = ",".join(value)
            env[f"OPENMAILSERVER_{key.upper()}"] = str(value)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `openmailserver ARGS` with this daemon's settings."""
        result = subprocess.run([sys.executable, "-m", "openmailserver", *args], env=self.env,
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"openmailserver {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start(self, wait: bool = True) -> "Daemon":
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "openmailserver", "serve"], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT, cwd=self.data_dir.parent)
        out.close()
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon {self.name} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                response = httpx.get(f"{self.api_url}/health", timeout=2)
                if response.status_code == 200:
                    return response.json()
                last = response.text
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"daemon {self.name} not healthy after {timeout}s: {last}\n{self.output()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon {self.name} ignored SIGTERM for {timeout}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> "Daemon":
        self.stop()
        return self.start()

    def output(self, tail: int | None = 5000) -> str:
        """What the daemon printed: the last `tail` characters, or all of it."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-tail:] if tail else text

    # -- clients ---------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings['api_port']}"

    @property
    def smtp_port(self) -> int:
        return int(self.settings["smtp_port"])

    def http(self, key: str | None = "admin") -> httpx.Client:
        headers = {}
        if key == "admin":
            key = self.admin_key
        if key:
            headers["X-OpenMailserver-Key"] = key
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)

    def create_mailbox(self, local: str, domain: str | None = None, **extra: Any) -> dict:
        with self.http() as client:
            response = client.post("/v1/mailboxes", json={
                "local_part": local, "domain": domain or self.settings["primary_domain"], **extra})
        assert response.status_code == 201, response.text
        return response.json()

    def maildir(self, address: str, folder: str = "INBOX") -> Path:
        local, domain = address.split("@")
        root = self.data_dir / "mail" / domain / local
        return root if folder == "INBOX" else root / f".{folder}"

    def sqlite(self, sql: str, *args: Any) -> list[tuple]:
        """Rows of a query on the daemon's index (read-only)."""
        conn = sqlite3.connect(f"file:{self.data_dir / 'openmailserver.db'}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()

    def messages_on_disk(self, address: str, folder: str = "INBOX") -> list[bytes]:
        path = self.maildir(address, folder)
        return [p.read_bytes() for sub in ("new", "cur") for p in sorted((path / sub).iterdir())]


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def factory(name: str = "a", start: bool = True, **settings: Any) -> Daemon:
        daemon = Daemon(tmp_path, name, **settings)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield factory
    for daemon in started:
        try:
            daemon.stop()
        finally:
            daemon.kill()


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    with DNSServer() as server:
        yield server
