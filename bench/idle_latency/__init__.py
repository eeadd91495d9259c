"""IDLE notification latency: from the SMTP 250 of a delivery to the untagged EXISTS on
an IMAP session idling on the recipient's INBOX. openmailserver (its MX and its IMAP
server) against Postfix delivering with virtual(8) into the Maildir a private Dovecot
serves, the usual pairing."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from pathlib import Path

from bench.anchors import dovecot, postfix
from bench.anchors.dovecot import PrivateDovecot
from bench.anchors.postfix import PrivatePostfix
from bench.harness.dns import DNSServer
from bench.harness.imap import ImapClient
from bench.harness.mailgen import message
from bench.harness.measure import background_load
from bench.harness.procs import Processes
from bench.harness.runner import OURS, Benchmark, Metric
from bench.harness.stats import percentile
from bench.targets.openmailserver import OpenMailserver

DOMAIN = "bench.test"
USER = f"user@{DOMAIN}"
PASSWORD = "bench-idle-password-1"
SENDER = "load@sender.example"
CLIENT_HELO = "client.sender.example"
WAIT = 30.0  # seconds one notification may take before the run fails
TRIES = 200  # SMTP connections tried before giving up on reaching another worker than the IMAP session's


class ExistsWatch:
    """The EXISTS counts an IDLE session reported, and when each first arrived."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.changed = threading.Condition()

    def __call__(self, count: int, at: float) -> None:
        with self.changed:
            self.seen.setdefault(count, at)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: any(c >= count for c in self.seen), timeout):
                raise TimeoutError(f"no EXISTS {count} within {timeout}s (last: {max(self.seen, default=0)})")
            return min(at for c, at in self.seen.items() if c >= count)


class IdleLatency(Benchmark):
    name = "idle_latency"
    anchor = "postfix+dovecot"
    debs = ("postfix", "dovecot-imapd")
    profiles = False
    columns = {
        "min_ms": "min, raw (ms)",
        "mean_ms": "mean (ms)",
        "max_ms": "max (ms)",
        "workers": "workers (IMAP, SMTP)",
        "background_cpu_cores": "busy before run, other work (cores)",
    }

    def __init__(self, deliveries: int = 100, warmup: int = 5, gap: float = 0.05) -> None:
        self.deliveries, self.warmup, self.gap = deliveries, warmup, gap
        self.metrics = (
            Metric("median_ms", "median", "ms", higher_is_better=False),
            Metric("p99_ms", "p99", "ms", higher_is_better=False, target_value=50.0),
        )
        self.title = f"IDLE notification latency: SMTP 250 → untagged EXISTS, {deliveries} deliveries"
        self.short_title = "IDLE latency (SMTP 250 → EXISTS)"
        self.description = (
            f"An IMAP session logs in, SELECTs INBOX and IDLEs. Another client delivers {deliveries} messages "
            f"(about 4 KB) one at a time over one SMTP connection to the target's MX port; for each, the time "
            f"from reading the 250 that ends DATA to reading the untagged `* n EXISTS` that announces it on the "
            f"idling session (both read by this machine's clock; a reader thread timestamps every line as it "
            f"arrives). The next delivery starts {int(self.gap * 1000)} ms after the EXISTS. {warmup} untimed "
            f"deliveries go first. **openmailserver**: the SMTP connection and the IDLE session are on "
            f"different worker processes (the SMTP greeting and the IMAP `ID` response name the worker; the "
            f"client reconnects until they differ), so every announcement crosses from one process to another; "
            f"its MX answers 250 once the message is durable and indexed, and announces it to idling sessions "
            f"at once (an EXISTS that arrives before the client "
            f"has read the 250 counts as 0 ms; the raw minimum, then negative, is shown). **Anchor**: a private "
            f"Postfix (stock, as in SMTP ingest) answers 250 once the message is in its queue, then its virtual(8) "
            f"agent writes it into the Maildir that a private Dovecot serves; Dovecot notices the new file through "
            f"inotify and tells the idling client, after waiting up to 500 ms for further changes (by design). "
            f"The target: a delivered message reaches an IDLE session in another worker within 50 ms "
            f"(p99 ≤ 50 ms).")

    def versions(self) -> dict[str, str | None]:
        return {"postfix": postfix.version(), "dovecot": dovecot.version()}

    def parameters(self) -> dict:
        return {"deliveries": self.deliveries, "warmup_deliveries": self.warmup, "gap_seconds": self.gap}

    def setup(self) -> None:
        from openmailserver.auth.credentials import hash_password

        self.password_hash = hash_password(PASSWORD)
        self.dns = DNSServer().start()
        self.dns.add("sender.example", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
        self.dns.add("_dmarc.sender.example", "TXT", "v=DMARC1; p=none")
        self.dns.add(CLIENT_HELO, "A", "127.0.0.1")

    def teardown(self) -> None:
        self.dns.stop()

    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        work.mkdir(parents=True)
        work.chmod(0o755)
        servers: list = []
        try:
            if target == OURS:
                ours = OpenMailserver(procs, work / "openmailserver", DOMAIN, self.dns.address).start()
                servers.append(ours)
                ours.create_mailbox("user", password=PASSWORD)
                smtp_port, imap_port = ours.port, ours.settings["imap_port"]
            else:
                mta = PrivatePostfix(procs, work / "postfix", DOMAIN, ["user"]).start()
                servers.append(mta)
                imapd = PrivateDovecot(procs, work / "dovecot", {USER: self.password_hash},
                                       mail_root=mta.mail_dir).prepare().start()
                servers.append(imapd)
                smtp_port, imap_port = mta.port, imapd.port
            return self._measure(smtp_port, imap_port, across_workers=target == OURS)
        except Exception as exc:
            logs = "\n".join(server.log_tail() for server in servers)
            raise RuntimeError(f"{target}: {exc}\n{logs}") from exc
        finally:
            for server in reversed(servers):
                server.stop()

    def _measure(self, smtp_port: int, imap_port: int, across_workers: bool) -> dict:
        watch = ExistsWatch()
        client = ImapClient("127.0.0.1", imap_port)
        workers = ""
        if across_workers:
            found = re.search(rb'"worker" "(\d+)"', b"".join(client.command("ID NIL").untagged))
            if not found:
                raise RuntimeError("the IMAP ID response names no worker")
            smtp, smtp_worker = _smtp_elsewhere(smtp_port, found.group(1).decode())
            workers = f"{found.group(1).decode()}, {smtp_worker}"
        else:
            smtp = smtplib.SMTP("127.0.0.1", smtp_port, local_hostname=CLIENT_HELO, timeout=60)
        try:
            client.login(USER, PASSWORD)
            selected = client.command("SELECT INBOX")
            exists = [int(line.split()[1]) for line in selected.untagged if line.rstrip().endswith(b"EXISTS")]
            count = exists[0] if exists else 0
            session = client.idle(watch)
            latencies: list[float] = []
            background = 0.0
            for n in range(self.warmup + self.deliveries):
                if n == self.warmup:
                    background = background_load()
                smtp.sendmail(SENDER, [USER], message(n, USER))
                acknowledged = time.monotonic()
                count += 1
                announced = watch.wait_for(count, WAIT)
                if n >= self.warmup:
                    latencies.append(1000 * (announced - acknowledged))
                time.sleep(self.gap)
            session.done()
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
            client.logout()
        # An EXISTS read before the 250 (possible when the server announces the message as it
        # answers) counts as no delay at all; the raw minimum is kept.
        clamped = [max(0.0, latency) for latency in latencies]
        return {
            "median_ms": round(percentile(clamped, 50), 2),
            "p99_ms": round(percentile(clamped, 99), 2),
            "min_ms": round(min(latencies), 2),
            "mean_ms": round(sum(latencies) / len(latencies), 2),
            "max_ms": round(max(latencies), 2),
            "workers": workers or "–",
            "background_cpu_cores": round(background, 3),
        }


def _smtp_elsewhere(port: int, imap_worker: str) -> tuple[smtplib.SMTP, str]:
    """An SMTP connection that a worker other than `imap_worker` accepted (its greeting says which)."""
    for _ in range(TRIES):
        smtp = smtplib.SMTP(local_hostname=CLIENT_HELO, timeout=60)
        _, banner = smtp.connect("127.0.0.1", port)
        found = re.search(rb"\(worker (\d+)\)", banner)
        if found is None:
            smtp.close()
            raise RuntimeError(f"the SMTP greeting names no worker: {banner!r}")
        if found.group(1).decode() != imap_worker:
            return smtp, found.group(1).decode()
        smtp.quit()
    raise RuntimeError(f"no SMTP connection reached a worker other than {imap_worker}")
