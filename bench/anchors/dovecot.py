"""A private Dovecot IMAP instance under a temporary directory, on a loopback port.

`dovecot -F -c ROOT/dovecot.conf` with a configuration of its own: base and
state directories under ROOT, only IMAP, only 127.0.0.1 at a port of our
choosing, no TLS (loopback counts as secure, so LOGIN is allowed), mail in
Maildirs (`mail_location = maildir:~`, home = MAIL_ROOT/<domain>/<local>),
users from a passwd-file (the benchmarks give it the argon2id hash
openmailserver would store), and the auth cache on (openmailserver caches
successful logins too; Dovecot's cache still verifies the hash at each
login). Mail processes run as `nobody`. The system's /etc/dovecot and its
service are never read, written or started.

Everything else keeps Dovecot's built-in defaults, except, when asked for more
connections than those defaults allow, the process and client limits and
`mail_max_userip_connections` (a stock Dovecot serves at most 100 IMAP
sessions, 10 per user and address).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

from bench.harness.procs import Processes, free_port, group_alive, kill_group, wait_for_port

DOVECOT = "/usr/sbin/dovecot"
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
STOCK_PROCESS_LIMIT = 100      # default_process_limit
STOCK_USERIP_CONNECTIONS = 10  # mail_max_userip_connections


def version() -> str | None:
    try:
        result = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return result.stdout.split()[0] if result.stdout.strip() else None


def mail_owner() -> tuple[int, int]:
    entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


SCHEMES = {"$argon2id$": "ARGON2ID", "$argon2i$": "ARGON2I", "$6$": "SHA512-CRYPT", "$5$": "SHA256-CRYPT"}


def password_field(hashed: str) -> str:
    """A passwd-file password: the hash (a crypt/PHC string) with Dovecot's {SCHEME} prefix."""
    for prefix, scheme in SCHEMES.items():
        if hashed.startswith(prefix):
            return f"{{{scheme}}}{hashed}"
    raise ValueError(f"no Dovecot scheme known for a hash like {hashed[:12]}...")


class PrivateDovecot:
    """One Dovecot instance rooted at `root`; `users` maps address -> password hash (a
    crypt or PHC string such as openmailserver stores)."""

    name = "dovecot"

    def __init__(self, procs: Processes, root: Path, users: dict[str, str], *, mail_root: Path | None = None,
                 connections: int = 0, per_user: int = 0) -> None:
        """`connections`/`per_user`: IMAP sessions in all and per user (and address) to allow
        when more than Dovecot's defaults; `mail_root`: where the Maildirs are (default ROOT/mail)."""
        self.procs = procs
        self.root = root
        self.users = users
        self.mail_root = mail_root or root / "mail"
        self.connections = connections
        self.per_user = per_user
        self.port = free_port()
        self.config = root / "dovecot.conf"
        self.log_path = root / "dovecot.log"
        self._proc: subprocess.Popen | None = None
        self._stop_now = None

    # -- configuration -------------------------------------------------------

    def dovecot_conf(self) -> str:
        limits = ""
        if self.connections > STOCK_PROCESS_LIMIT - 10:
            processes = self.connections + 50
            limits = (f"default_client_limit = {4 * processes}\n"
                      f"service imap {{\n  process_limit = {processes}\n}}\n"
                      f"service imap-login {{\n  process_limit = {processes}\n}}\n")
        userip = ""
        if self.per_user > STOCK_USERIP_CONNECTIONS:
            userip = f"  mail_max_userip_connections = {self.per_user}\n"
        return f"""\
# Private benchmark instance: nothing here is read from or written to /etc/dovecot.
base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
instance_name = bench-{self.port}
listen = 127.0.0.1
protocols = imap
ssl = no
log_path = {self.log_path}
mail_location = maildir:~
mail_uid = {MAIL_USER}
mail_gid = {MAIL_GROUP}
auth_cache_size = 10M
auth_cache_ttl = 5 mins
namespace inbox {{
  inbox = yes
}}
passdb {{
  driver = passwd-file
  args = {self.root / "passwd"}
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={MAIL_GROUP} home={self.mail_root}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
protocol imap {{
{userip}}}
{limits}"""

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.mail_root / domain / local

    # -- life cycle ----------------------------------------------------------

    def prepare(self) -> "PrivateDovecot":
        """Write the configuration and create the (empty) Maildirs, owned by the mail user."""
        uid, gid = mail_owner()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for parent in self.root.parents:
            if not parent.stat().st_mode & 0o001:
                raise RuntimeError(f"{parent} is not searchable by other users; Dovecot's mail processes "
                                   f"running as {MAIL_USER!r} cannot reach {self.root}")
        self.config.write_text(self.dovecot_conf())
        (self.root / "passwd").write_text("".join(f"{address}:{password_field(hashed)}\n"
                                                  for address, hashed in self.users.items()))
        self.mail_root.mkdir(parents=True, exist_ok=True)
        for address in self.users:
            for sub in ("cur", "new", "tmp"):
                (self.maildir(address) / sub).mkdir(parents=True, exist_ok=True)
        chown_tree(self.mail_root, uid, gid)
        return self

    def start(self) -> "PrivateDovecot":
        if not self.config.exists():
            self.prepare()
        self._proc = self.procs.spawn([DOVECOT, "-F", "-c", self.config], log=self.root / "master.out")
        self._stop_now = self.procs.on_exit(f"dovecot in {self.root}", self._shutdown)
        wait_for_port("127.0.0.1", self.port, START_TIMEOUT, alive=lambda: self._proc.poll() is None)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def pgid(self) -> int | None:
        """The master's process group, which holds every Dovecot process: for CPU accounting."""
        return self.pid

    def stop(self) -> None:
        if self._stop_now:
            self._stop_now()
            self._stop_now = None

    def _shutdown(self) -> None:
        if self._proc is None:
            return
        pgid = self._proc.pid
        # SIGTERM to the master alone: it stops its children and then exits.
        if self._proc.poll() is None:
            os.kill(self._proc.pid, 15)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and (self._proc.poll() is None or group_alive(pgid)):
            time.sleep(0.05)
        self.procs.stop(self._proc)
        if group_alive(pgid):
            kill_group(pgid)
        self._proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for directory, subdirs, files in os.walk(root):
        for name in (*subdirs, *files):
            os.chown(os.path.join(directory, name), uid, gid)
