"""SIGKILL during concurrent SMTP deliveries loses nothing acknowledged and shows no half message.

After each kill, before restarting, the data dir is inspected as a crashed
server leaves it: every committed index row must point at a complete file,
and nothing in `tmp/` may be indexed. After the restart every message that got
`250` must be in the Maildir exactly once.
"""

from __future__ import annotations

import random
import smtplib
import sqlite3
import threading
import time
from pathlib import Path

from support.mail import build_message

ROUNDS = 3
SENDERS = 8


def _sender_loop(port: int, worker: int, acked: list[str], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        token = f"tok-{worker}-{n}-{random.randrange(1 << 30)}"
        n += 1
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                client.sendmail("load@remote.test", ["victim@crash.test"],
                                build_message("load@remote.test", "victim@crash.test", token,
                                              body=f"{token}\n" + "filler line\n" * 40))
        except (OSError, smtplib.SMTPException):
            continue  # not acknowledged: the daemon died mid-transaction or is down
        acked.append(token)


def _check_crashed_state(data_dir: Path, maildir: Path) -> int:
    db = sqlite3.connect(data_dir / "openmailserver.db")
    rows = db.execute("SELECT filename, size FROM messages m JOIN folders f ON f.id = m.folder_id "
                      "WHERE f.name = 'INBOX'").fetchall()
    db.close()
    indexed = set()
    for filename, size in rows:
        path = maildir / filename
        assert path.is_file(), f"index row points at a missing file {filename}"
        assert path.stat().st_size == size, f"{filename} is incomplete"
        assert filename.startswith(("new/", "cur/"))
        indexed.add(path.name)
    leftovers = {p.name for p in (maildir / "tmp").iterdir()}
    assert not leftovers & indexed
    return len(rows)


def test_sigkill_during_deliveries_loses_nothing(make_daemon):
    daemon = make_daemon("crash")
    daemon.create_mailbox("victim")
    maildir = daemon.maildir("victim@crash.test")
    acked: list[str] = []
    totals = []
    for _ in range(ROUNDS):
        stop = threading.Event()
        workers = [threading.Thread(target=_sender_loop, args=(daemon.smtp_port, w, acked, stop))
                   for w in range(SENDERS)]
        for worker in workers:
            worker.start()
        time.sleep(random.uniform(1.0, 2.0))
        daemon.kill()
        stop.set()
        for worker in workers:
            worker.join()
        totals.append(_check_crashed_state(daemon.data_dir, maildir))
        daemon.start()
    daemon.stop()
    found: dict[str, int] = {}
    for path in [*(maildir / "new").iterdir(), *(maildir / "cur").iterdir()]:
        subject = next(line for line in path.read_bytes().split(b"\r\n") if line.startswith(b"Subject: "))
        token = subject.split(b": ", 1)[1].decode()
        found[token] = found.get(token, 0) + 1
    missing = [t for t in acked if t not in found]
    duplicates = [t for t in acked if found.get(t, 0) > 1]
    print(f"\ncrash safety: {ROUNDS} SIGKILLs, {len(acked)} messages acknowledged, "
          f"{sum(found.get(t, 0) for t in acked)} found, missing={len(missing)}, duplicates={len(duplicates)}, "
          f"indexed rows at each crash: {totals}")
    assert len(acked) > 50
    assert not missing and not duplicates
    assert not list((maildir / "tmp").iterdir())
