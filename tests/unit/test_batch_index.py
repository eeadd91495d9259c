"""Group commit merges deliveries: `record_messages` over a batch indexes exactly as
`record_message` one by one would, and `write_batch` keeps each job's failure its own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from openmailserver.core.deliver import Delivery, _index_jobs
from openmailserver.store import accounts, messages
from openmailserver.store.db import Database, mergeable


def _setup(conn: sqlite3.Connection) -> list[str]:
    domain = accounts.insert_domain(conn, "batch.test", "oms", "unused-key")
    return [accounts.insert_mailbox(conn, address=f"{n}@batch.test", local_part=n, domain_id=domain["id"],
                                    password_hash="x", quota_bytes=quota)["id"]
            for n, quota in (("a", 0), ("b", 2500))]


def _specs(mailboxes: list[str]) -> list[dict]:
    a, b = mailboxes
    meta = lambda mid, subject, **more: {"message_id": mid, "subject": subject, "from": "x@y.test", **more}  # noqa: E731
    return [
        {"mailbox_id": a, "folder": "INBOX", "filename": "new/1", "size": 100, "meta": meta("m1@x", "first")},
        {"mailbox_id": a, "folder": "INBOX", "filename": "new/2", "size": 200,
         "meta": meta("m2@x", "Re: first", in_reply_to="m1@x")},                 # a reply within the batch
        {"mailbox_id": a, "folder": "Sent", "filename": "cur/3", "size": 300, "flags": "\\Seen",
         "meta": meta("m3@x", "other", references=["old@x", "m2@x"]), "direction": "outbound",
         "event_type": None},                                                      # newest reference first
        {"mailbox_id": b, "folder": "INBOX", "filename": "new/4", "size": 1000, "meta": meta("m1@x", "first")},
        {"mailbox_id": b, "folder": "INBOX", "filename": "new/5", "size": 2000,
         "meta": meta("m5@x", "late", references=["old@x"]), "internal_date": "2020-01-01T00:00:00Z"},
        {"mailbox_id": a, "folder": "INBOX", "filename": "new/6", "size": 50, "meta": meta("m6@x", "alone")},
        {"mailbox_id": a, "folder": "INBOX", "filename": "new/7", "size": 10, "meta": meta("old@x", "old again")},
        {"mailbox_id": a, "folder": "INBOX", "filename": "new/8", "size": 10,
         "meta": meta("m8@x", "Re: old", in_reply_to="old@x")},  # the stored copy of old@x answers first
    ]


def _history(conn: sqlite3.Connection, mailboxes: list[str]) -> None:
    """A message already indexed in each mailbox, which the batch refers to."""
    for n, mailbox_id in enumerate(mailboxes):
        messages.record_message(conn, mailbox_id=mailbox_id, folder="INBOX", filename=f"new/old-{n}",
                                size=10, meta={"message_id": "old@x", "subject": "old"})


def _state(conn: sqlite3.Connection, rows: list[dict]) -> dict:
    """Everything indexed, with generated ids replaced by the order they first appear in."""
    names: dict[str, int] = {}

    def name(value):
        return names.setdefault(value, len(names)) if value is not None else None

    msgs = conn.execute("SELECT m.filename, f.name, m.uid, m.modseq, m.size, m.flags, m.thread_id, m.direction, "
                        "m.subject, m.message_id, m.in_reply_to, m.refs, m.internal_date = m.created_at, "
                        "m.internal_date FROM messages m JOIN folders f ON f.id = m.folder_id "
                        "JOIN mailboxes mb ON mb.id = m.mailbox_id ORDER BY mb.address, m.filename").fetchall()
    return {
        "messages": [(*r[:6], name(r[6]), *r[7:12], r[12], r[13] if not r[12] else None) for r in msgs],
        "threads": sorted((name(t), c) for t, c in conn.execute("SELECT id, message_count FROM threads")),
        "folders": [tuple(r) for r in conn.execute(
            "SELECT mb.address, f.name, f.uidnext, f.highestmodseq, f.message_count FROM folders f "
            "JOIN mailboxes mb ON mb.id = f.mailbox_id ORDER BY mb.address, f.name")],
        "used": [tuple(r) for r in conn.execute("SELECT address, used_bytes FROM mailboxes ORDER BY address")],
        "events": [(e["type"], e["payload"]["folder"], e["payload"]["subject"])
                   for e in messages.list_events(conn, 0, 100) if e["type"] == "message.received"],
        "rows": [(r["uid"], r["folder"], r["over_quota"], "event" in r) for r in rows],
    }


def test_a_batch_indexes_like_one_message_at_a_time(tmp_path: Path) -> None:
    one, batch = Database(tmp_path / "one.db"), Database(tmp_path / "batch.db")
    states = []
    for db, together in ((one, False), (batch, True)):
        mailboxes = db.write(_setup)
        db.write(_history, mailboxes)

        def index(conn: sqlite3.Connection) -> list[dict]:
            specs = _specs(mailboxes)
            if together:
                return messages.record_messages(conn, specs)
            return [messages.record_message(conn, **spec) for spec in specs]

        rows = db.write(index)
        events = [r["event"] for r in rows if "event" in r]
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        logged = db.read(messages.list_events, 0, 100)
        assert {e["event_id"]: e["seq"] for e in events}.items() <= {e["event_id"]: e["seq"] for e in logged}.items()
        states.append(db.read(_state, rows))
        db.close()
    assert states[0] == states[1]
    state = states[1]
    # The reply joined its parent's thread, the Sent copy followed its newest reference (m2),
    # and mailbox b's second message found the old thread through References.
    threads = {filename: thread for filename, _, _, _, _, _, thread, *_ in state["messages"]}
    assert threads["new/1"] == threads["new/2"] == threads["cur/3"] != threads["new/6"]
    assert threads["new/5"] == threads["new/old-1"]
    assert threads["new/8"] == threads["new/old-0"] != threads["new/7"]
    assert state["rows"][3] == (2, "INBOX", False, True)  # b: 1010 bytes used, quota 2500
    assert state["rows"][4] == (3, "INBOX", True, True)  # b: 3010 bytes used
    assert state["rows"][2] == (1, "Sent", False, False)


def test_a_missing_folder_fails_the_batch(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.db")
    mailboxes = db.write(_setup)
    specs = _specs(mailboxes)
    specs[1]["folder"] = "Nowhere"
    with pytest.raises(LookupError, match="Nowhere"):  # core.deliver answers it with a 451
        db.write(messages.record_messages, specs)
    assert db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]) == 0
    db.close()


def test_duplicates_are_found_among_stored_rows_and_earlier_in_the_batch(tmp_path: Path) -> None:
    db = Database(tmp_path / "dup.db")
    mailboxes = db.write(_setup)
    mailbox = {"id": mailboxes[0]}

    def copy(message_id: str, dedupe: bool = True, digest: str = "d1") -> Delivery:
        return Delivery(mailbox=mailbox, data=b"x", dedupe=dedupe,
                        meta={"message_id": message_id, "content_digest": digest, "queue_id": "q",
                              "envelope_from": "s@x", "peer_ip": "127.0.0.1"})

    [[stored]] = db.write(_index_jobs, [([(copy("stored@x"), "new/0")], None)])

    def index(conn: sqlite3.Connection) -> list[list[dict]]:
        return _index_jobs(conn, [
            ([(copy("stored@x"), "new/1"), (copy("fresh@x"), "new/2")], None),
            ([(copy("fresh@x"), "new/3"), (copy("fresh@x", dedupe=False), "new/4")], None),
            # The same Message-ID with other content is another message.
            ([(copy("stored@x", digest="d2"), "new/5"), (copy("fresh@x", digest="d2"), "new/6")], None),
        ])

    first, second, third = db.write(index)
    assert first[0] == {"duplicate": True, "filename": "new/1", "original": stored["id"]} and "uid" in first[1]
    assert second[0] == {"duplicate": True, "filename": "new/3", "original": first[1]["id"]} and "uid" in second[1]
    assert all("uid" in row for row in third)
    assert db.read(lambda conn: conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]) == 5
    noted = db.read(lambda conn: [tuple(r) for r in conn.execute(
        "SELECT message_id, queue_id, envelope_from, peer_ip FROM suppressed_copies ORDER BY id")])
    assert noted == [(stored["id"], "q", "s@x", "127.0.0.1"), (first[1]["id"], "q", "s@x", "127.0.0.1")]
    db.close()


merged_calls: list[int] = []


def _put_many(conn: sqlite3.Connection, calls: list[tuple]) -> list[str]:
    merged_calls.append(len(calls))
    return [_put_one(conn, *args) for args in calls]


@mergeable(_put_many)
def _put(conn: sqlite3.Connection, key: str) -> str:
    return _put_one(conn, key)


def _put_one(conn: sqlite3.Connection, key: str) -> str:
    if key == "bad":
        raise ValueError("bad key")
    conn.execute("INSERT INTO kv (k) VALUES (?)", (key,))
    return key.upper()


def _other(conn: sqlite3.Connection, key: str) -> str:
    conn.execute("INSERT INTO kv (k) VALUES (?)", (key,))
    return key


def test_merged_jobs_run_once_and_a_failure_stays_its_own(tmp_path: Path) -> None:
    db = Database(tmp_path / "kv.db")
    db.write(lambda conn: conn.execute("CREATE TABLE kv (k TEXT)"))
    merged_calls.clear()
    results = db.write_batch([(_put, ("a",), {}), (_put, ("b",), {}), (_other, ("c",), {}), (_put, ("d",), {})])
    assert results == [(True, "A"), (True, "B"), (True, "c"), (True, "D")]
    assert merged_calls == [2]  # a and b together; d alone after the unmergeable c
    merged_calls.clear()
    results = db.write_batch([(_put, ("e",), {}), (_put, ("bad",), {}), (_put, ("f",), {})])
    assert merged_calls == [3]
    assert results[0] == (True, "E") and results[2] == (True, "F")
    assert not results[1][0] and isinstance(results[1][1], ValueError)
    keys = db.read(lambda conn: [k for (k,) in conn.execute("SELECT k FROM kv ORDER BY k")])
    assert keys == ["a", "b", "c", "d", "e", "f"]  # the undone merged attempt left nothing twice
    db.close()
