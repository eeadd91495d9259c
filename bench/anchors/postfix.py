"""A private Postfix instance under a temporary directory, on a loopback port.

It has its own config_directory, queue_directory and data_directory (`postfix
-c DIR`), listens only on 127.0.0.1 at a port of our choosing, makes no DNS
lookups, runs nothing chrooted, and delivers its virtual domain's mail with
virtual(8) into Maildirs under the same directory; mail for other domains
goes to a `relayhost` when one is given (clients on 127.0.0.0/8 may relay),
and smtpd offers STARTTLS when given a certificate. The master runs as root as
usual and its daemons as the package's unprivileged `postfix` user (the
`mail_owner`); mailbox files belong to `nobody`. The system's /etc/postfix and
its service are never read, written or started.

Everything else keeps Postfix's defaults (process limits, concurrency,
in_flow_delay), so the figures are those of a stock installation.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from bench.harness.procs import Processes, free_port, group_alive, kill_group, wait_for_port

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"
MAILBOX_USER = "nobody"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# master.cf: Debian's stock services, none chrooted; smtpd on the private port.
MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def version() -> str | None:
    """Postfix's mail_version (needs no configuration)."""
    try:
        result = subprocess.run([POSTCONF, "-d", "-h", "-c", "/nonexistent", "mail_version"],
                                capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return result.stdout.strip() or None


class PrivatePostfix:
    """One Postfix instance rooted at `root` serving `domain` with the given mailboxes."""

    name = "postfix"

    def __init__(self, procs: Processes, root: Path, domain: str, locals_: list[str],
                 hostname: str | None = None, relayhost: str = "", tls: tuple[Path, Path] | None = None) -> None:
        """`relayhost` (e.g. "[127.0.0.1]:2525"): where mail for other domains goes, as a
        smarthost; `tls`: (certificate, key) to offer STARTTLS on the smtpd port."""
        self.procs = procs
        self.root = root
        self.domain = domain
        self.locals = locals_
        self.hostname = hostname or f"mx.{domain}"
        self.relayhost = relayhost
        self.tls = tls
        self.port = free_port()
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.mail_dir = root / "vmail"
        self.log_path = root / "maillog"
        self._proc: subprocess.Popen | None = None
        self._master_pgid: int | None = None
        self._stop_now = None

    # -- configuration -------------------------------------------------------

    def main_cf(self) -> str:
        owner = pwd.getpwnam(MAILBOX_USER)
        tls = {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": self.tls[0],
               "smtpd_tls_key_file": self.tls[1]} if self.tls else {}
        return "\n".join(f"{key} = {value}".rstrip() for key, value in {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": MAIL_OWNER,
            "setgid_group": SETGID_GROUP,
            "myhostname": self.hostname,
            "mydomain": self.domain,
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": self.relayhost,
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            # No DNS at all: no MX lookups, no reverse lookup of the client.
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": self.mail_dir,
            "virtual_mailbox_maps": f"texthash:{self.config_dir / 'vmailbox'}",
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
            "maillog_file": self.log_path,
            "maillog_file_prefixes": self.root,
            "biff": "no",
            "append_dot_mydomain": "no",
            **tls,
        }.items()) + "\n"

    def master_cf(self) -> str:
        return f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + MASTER_SERVICES

    def vmailbox(self) -> str:
        # A trailing slash makes virtual(8) deliver to a Maildir.
        return "".join(f"{local}@{self.domain} {self.domain}/{local}/\n" for local in self.locals)

    @property
    def pgid(self) -> int | None:
        """The master's process group, which holds all Postfix daemons: for CPU accounting."""
        return self._master_pgid

    def maildir(self, local: str) -> Path:
        return self.mail_dir / self.domain / local

    # -- life cycle ----------------------------------------------------------

    def start(self) -> "PrivatePostfix":
        for user in (MAIL_OWNER, MAILBOX_USER):
            pwd.getpwnam(user)  # KeyError here means the postfix package is not installed
        grp.getgrnam(SETGID_GROUP)
        self.config_dir.mkdir(parents=True)
        self.root.chmod(0o755)
        # The unprivileged daemons (and the master, when it opens its lock) must reach
        # the queue, data and mail directories.
        for parent in self.root.parents:
            if not parent.stat().st_mode & 0o001:
                raise RuntimeError(f"{parent} is not searchable by other users; Postfix's daemons "
                                   f"running as {MAIL_OWNER!r} cannot reach {self.root}")
        (self.config_dir / "main.cf").write_text(self.main_cf())
        (self.config_dir / "master.cf").write_text(self.master_cf())
        (self.config_dir / "vmailbox").write_text(self.vmailbox())
        self.mail_dir.mkdir()
        shutil.chown(self.mail_dir, MAILBOX_USER, pwd.getpwnam(MAILBOX_USER).pw_gid)
        self.queue_dir.mkdir()
        self.data_dir.mkdir()
        shutil.chown(self.data_dir, MAIL_OWNER)
        self._postfix("check")  # creates the queue's subdirectories with the right owners
        # With start-fg, `postfix` runs until the master exits, so its end is ours to see.
        self._proc = self.procs.spawn([POSTFIX, "-c", self.config_dir, "start-fg"], log=self.root / "master.out")
        self._stop_now = self.procs.on_exit(f"postfix in {self.root}", self._shutdown)
        wait_for_port("127.0.0.1", self.port, START_TIMEOUT, alive=lambda: self._proc.poll() is None)
        # The master makes itself a session leader, so its daemons are in its process
        # group, not in that of the process we spawned.
        master_pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        self._master_pgid = os.getpgid(master_pid)
        return self

    def stop(self) -> None:
        if self._stop_now:
            self._stop_now()
            self._stop_now = None

    def _shutdown(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            subprocess.run([POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, timeout=30)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and (self._proc.poll() is None or group_alive(self._master_pgid)):
            time.sleep(0.05)
        self.procs.stop(self._proc)
        if group_alive(self._master_pgid):  # a daemon that ignored `postfix stop`
            kill_group(self._master_pgid)
        self._proc = None

    def _postfix(self, *args: str) -> None:
        result = subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            # Postfix writes its errors to the terminal or its log, not to a pipe.
            raise RuntimeError(f"postfix {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stderr.strip()}\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
