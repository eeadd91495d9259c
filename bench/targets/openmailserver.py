"""openmailserver started the way the tests start it: `python -m openmailserver
serve` with OPENMAILSERVER_* settings, a data dir under the benchmark's
directory, every listener on loopback at an ephemeral port, and DNS answered
by a loopback server so SPF/DMARC lookups stay on this machine."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness.procs import Processes, free_port

PORT_SETTINGS = ("smtp_port", "submission_port", "submission_starttls_port", "imap_port", "imaps_port",
                 "api_port")
START_TIMEOUT = 60.0


class OpenMailserver:
    name = "openmailserver"

    def __init__(self, procs: Processes, root: Path, domain: str, dns_address: str, **settings: Any) -> None:
        self.procs = procs
        self.root = root
        self.domain = domain
        self.data_dir = root / "data"
        self.log_path = root / "daemon.out"
        self.admin_key = "om_" + secrets.token_hex(20)
        self.settings: dict[str, Any] = {
            "data_dir": self.data_dir,
            "hostname": f"mx.{domain}",
            "primary_domain": domain,
            "bind": "127.0.0.1",
            "api_host": "127.0.0.1",
            "admin_api_key": self.admin_key,
            "dns_nameservers": dns_address,
            **{name: free_port() for name in PORT_SETTINGS},
            **settings,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.settings["smtp_port"])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def pgid(self) -> int | None:
        """The daemon's process group (it leads its own session): for CPU accounting."""
        return self.pid

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings['api_port']}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAILSERVER_")}
        env.update({f"OPENMAILSERVER_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> "OpenMailserver":
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = self.procs.spawn([sys.executable, "-m", "openmailserver", "serve"], env=self.env(),
                                     log=self.log_path, cwd=self.root)
        self._wait_healthy()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc)
            self.proc = None

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"openmailserver exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.api_url}/health", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"openmailserver not healthy after {START_TIMEOUT}s: {last}\n{self.log_tail()}")

    def create_mailbox(self, local: str, password: str | None = None) -> dict:
        """Create local@domain; the answer holds its password and API key."""
        body = {"local_part": local, "domain": self.domain, **({"password": password} if password else {})}
        response = httpx.post(f"{self.api_url}/v1/mailboxes", headers={"X-OpenMailserver-Key": self.admin_key},
                              json=body, timeout=60)
        if response.status_code != 201:
            raise RuntimeError(f"creating mailbox {local}@{self.domain}: {response.status_code} {response.text}")
        return response.json()

    def maildir(self, local: str) -> Path:
        return self.data_dir / "mail" / self.domain / local

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
