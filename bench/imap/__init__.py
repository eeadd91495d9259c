"""IMAP operations on a 10,000-message mailbox: openmailserver against a private Dovecot.

The same corpus (bench.harness.mailgen) is dropped into each server's Maildir
`new/` while it is stopped; openmailserver indexes it at start-up, Dovecot on
first access. An untimed first connection SELECTs the mailbox and fetches its
metadata, so both have indexed it and cached the login; then one connection
times each operation in turn.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.anchors import dovecot
from bench.anchors.dovecot import PrivateDovecot
from bench.harness import mailgen
from bench.harness.dns import DNSServer
from bench.harness.imap import ImapClient
from bench.harness.measure import CpuSample, background_load
from bench.harness.procs import Processes
from bench.harness.profile import PySpy
from bench.harness.runner import OURS, Benchmark, Metric
from bench.targets.openmailserver import OpenMailserver

DOMAIN = "bench.test"
USER = f"user@{DOMAIN}"
PASSWORD = "bench-imap-password-1"
META = "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"

OPERATIONS = (
    ("login_select", "LOGIN + SELECT"),
    ("fetch_meta", f"UID FETCH 1:* {META}"),
    ("fetch_body", "UID FETCH 1:* BODY.PEEK[]"),
    ("search", f'UID SEARCH SUBJECT "{mailgen.SEARCH_WORD}"'),
    ("store", "UID STORE 1:* +FLAGS (\\Seen)"),
    ("append", "APPENDs"),
)


class ImapOperations(Benchmark):
    name = "imap"
    anchor = "dovecot"
    debs = ("dovecot-imapd",)
    columns = {
        "startup_seconds": "start-up, incl. indexing (s)",
        "first_pass_seconds": "untimed first SELECT + metadata FETCH (s)",
        "server_cpu_seconds": "server CPU (s)",
        "answers": "answers as expected",
        "machine_cpu_busy_cores": "machine CPU busy (cores)",
        "background_cpu_cores": "busy before run, other work (cores)",
    }

    def __init__(self, messages: int = 10_000, size: int = 4096, appends: int = 500, timeout: float = 900.0) -> None:
        self.messages, self.size, self.appends, self.timeout = messages, size, appends, timeout
        self.metrics = tuple(
            Metric(key, title if key != "append" else f"{appends} × APPEND", "s", higher_is_better=False,
                   target_ratio=1.0)
            for key, title in OPERATIONS) + (
            Metric("total", "all operations", "s", higher_is_better=False, target_ratio=1.0),)
        self.title = f"IMAP operations on a {messages:,}-message mailbox, one connection"
        self.short_title = f"IMAP vs Dovecot ({messages:,} messages)"
        self.description = (
            f"A mailbox of {messages:,} messages of about {size // 1024} KB (one in five multipart/alternative, "
            f"one in ten multipart/mixed with an attachment; CRLF line ends) is dropped into the Maildir `new/` "
            f"of each server while it is stopped, with the same file names and modification times. "
            f"openmailserver indexes the files when it starts (column \"start-up\"); Dovecot indexes on "
            f"first access. A first, untimed connection logs in, SELECTs INBOX and fetches `{META}` for all "
            f"messages, so both servers have indexed the mailbox and cached the login (Dovecot's auth cache is "
            f"on, as openmailserver's login cache is); its time is shown. Then one connection times, in order: "
            f"connect + LOGIN + SELECT, `UID FETCH 1:* {META}`, `UID FETCH 1:* BODY.PEEK[]`, "
            f"`UID SEARCH SUBJECT \"{mailgen.SEARCH_WORD}\"` (a header search; one message in ten matches), "
            f"`UID STORE 1:* +FLAGS (\\Seen)` (not silent: every message's FETCH comes back) and {appends} "
            f"APPENDs of a {size // 1024} KB message (LITERAL+ when the server offers it). Each answer is "
            f"checked (messages fetched, body bytes, search hits, flags stored, APPENDs accepted). The password "
            f"is an argon2id hash with openmailserver's parameters on both; the client is the same lean Python "
            f"client for both. The ratio is Dovecot's seconds / ours: above 1× openmailserver is faster.")

    def versions(self) -> dict[str, str | None]:
        return {"dovecot": dovecot.version()}

    def parameters(self) -> dict:
        return {"messages": self.messages, "message_bytes_target": self.size, "corpus_bytes": self.corpus_bytes,
                "appends": self.appends, "search_expected_hits": self.expected_hits}

    def setup(self) -> None:
        from openmailserver.auth.credentials import hash_password

        self.password_hash = hash_password(PASSWORD)
        self.expected_hits = sum(1 for n in range(self.messages) if n % 10 == 3)
        self.append_data = mailgen.message(self.messages + 1, USER, self.size, seed=2)
        self.corpus_dir = Path(tempfile.mkdtemp(prefix="openmailserver-bench-corpus-", dir="/tmp"))
        self.corpus = self.corpus_dir / "messages"
        try:
            print(f"  imap: writing a corpus of {self.messages:,} messages", flush=True)
            self.corpus_bytes = mailgen.write_corpus(self.corpus, self.messages, USER, self.size)
            self.dns = DNSServer().start()  # openmailserver wants one; nothing here looks anything up
        except BaseException:
            shutil.rmtree(self.corpus_dir, ignore_errors=True)
            raise

    def teardown(self) -> None:
        self.dns.stop()
        shutil.rmtree(self.corpus_dir, ignore_errors=True)

    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        work.mkdir(parents=True)
        work.chmod(0o755)
        if target == OURS:
            server = OpenMailserver(procs, work / "openmailserver", DOMAIN, self.dns.address)
            server.start()
            server.create_mailbox("user", password=PASSWORD)
            server.stop()
            mailgen.copy_into_maildir(self.corpus, server.maildir("user"))
            started = time.monotonic()
            server.start()
        else:
            server = PrivateDovecot(procs, work / "dovecot", {USER: self.password_hash}).prepare()
            mailgen.copy_into_maildir(self.corpus, server.maildir(USER), dovecot.mail_owner())
            started = time.monotonic()
            server.start()
        startup = time.monotonic() - started
        try:
            port = server.settings["imap_port"] if target == OURS else server.port
            first_pass = self._first_pass(port)
            background = background_load()
            profiler = PySpy(procs, server.pid, profile / f"{self.name}.raw") if profile else None
            cpu_before = CpuSample.take([server.pgid])
            result = self._session(port)
            cpu = cpu_before.until(CpuSample.take([server.pgid]))
            if profiler:
                profiler.stop()
        finally:
            server.stop()
        result.update(startup_seconds=round(startup, 2), first_pass_seconds=round(first_pass, 2),
                      background_cpu_cores=round(background, 3), **cpu)
        return result

    def _first_pass(self, port: int) -> float:
        started = time.perf_counter()
        client = ImapClient("127.0.0.1", port, timeout=self.timeout)
        try:
            client.login(USER, PASSWORD)
            client.command("SELECT INBOX")
            client.command(f"UID FETCH 1:* {META}")
        finally:
            client.logout()
        return time.perf_counter() - started

    def _session(self, port: int) -> dict:
        seconds: dict[str, float] = {}
        wrong: list[str] = []

        def expect(what: str, got: int, wanted: int) -> None:
            if got != wanted:
                wrong.append(f"{what} {got} (expected {wanted})")

        clock = time.perf_counter()

        def lap(key: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[key] = now - clock
            clock = now

        client = ImapClient("127.0.0.1", port, timeout=self.timeout)
        try:
            client.login(USER, PASSWORD)
            selected = client.command("SELECT INBOX")
            lap("login_select")
            exists = [int(line.split()[1]) for line in selected.untagged if line.rstrip().endswith(b"EXISTS")]
            expect("EXISTS", exists[0] if exists else 0, self.messages)
            meta = client.command(f"UID FETCH 1:* {META}")
            lap("fetch_meta")
            expect("metadata FETCH responses", meta.count(b"FETCH"), self.messages)
            bodies = client.command("UID FETCH 1:* BODY.PEEK[]")
            lap("fetch_body")
            expect("BODY[] responses", bodies.count(b"FETCH"), self.messages)
            expect("BODY[] bytes", bodies.literal_bytes, self.corpus_bytes)
            search = client.command(f'UID SEARCH SUBJECT "{mailgen.SEARCH_WORD}"')
            lap("search")
            expect("SEARCH hits", len(search.search_hits()), self.expected_hits)
            store = client.command("UID STORE 1:* +FLAGS (\\Seen)")
            lap("store")
            expect("STORE FETCH responses", store.count(b"FETCH"), self.messages)
            for _ in range(self.appends):
                client.append("INBOX", self.append_data, "\\Seen")
            lap("append")
        finally:
            client.logout()
        result = {key: round(value, 4) for key, value in seconds.items()}
        result["total"] = round(sum(seconds.values()), 4)
        result["answers"] = "; ".join(wrong) or "yes"
        result["literal_plus"] = "LITERAL+" in client.capabilities
        return result
