"""FETCH batch loading from the view's own detail rows (`imap.fetch.load_batch` with `known`).

The event loop reads with a deadline and hands what it did not get to an
executor; these tests pin down where it stops and that the rest loads the same.
"""

from __future__ import annotations

import os
import time

import pytest

from openmailserver.imap import fetch, protocol
from openmailserver.imap.files import FileFinder
from openmailserver.store import maildir

BODY = protocol.parse_command(b"a UID FETCH 1:* (BODY.PEEK[])").args.attributes  # type: ignore[union-attr]


def _folder(tmp_path, sizes: list[int]):
    for sub in ("new", "cur", "tmp"):
        (tmp_path / sub).mkdir()
    rows, contents = [], {}
    for uid, size in enumerate(sizes, 1):
        data = (b"Subject: %d\r\n\r\n" % uid).ljust(size, b"x")
        name = maildir.new_name(len(data))
        (tmp_path / name).write_bytes(data)
        rows.append((uid, f"id-{uid}", len(data), "2026-11-22T00:00:00+00:00", name))
        contents[uid] = data
    return rows, contents


def _load(tmp_path, rows, deadline=None):
    finder = FileFinder(tmp_path)
    try:
        return fetch.load_batch(None, 1, finder, [r[0] for r in rows], fetch.compile_plan(list(BODY)),
                                rows, deadline)
    finally:
        finder.close()


def test_known_rows_read_without_the_index(tmp_path):
    rows, contents = _folder(tmp_path, [100, 200, 300])
    details, data, entries, rest = _load(tmp_path, rows, time.perf_counter() + 60)
    assert rest == [] and entries == []
    assert {uid: item["full"] for uid, item in data.items()} == contents
    assert details[2] == rows[1][1:5]


def test_past_deadline_leaves_every_row_to_the_executor(tmp_path):
    rows, contents = _folder(tmp_path, [100, 200])
    details, data, _, rest = _load(tmp_path, rows, time.perf_counter() - 1)
    assert (details, data, rest) == ({}, {}, rows)
    _, data, _, rest = _load(tmp_path, rest)  # the executor's turn: no deadline
    assert rest == [] and {uid: item["full"] for uid, item in data.items()} == contents


def test_a_large_file_stops_the_inline_read(tmp_path):
    rows, contents = _folder(tmp_path, [100, fetch.INLINE_READ + 1, 100])
    _, data, _, rest = _load(tmp_path, rows, time.perf_counter() + 60)
    assert list(data) == [1] and rest == rows[1:]
    _, more, _, _ = _load(tmp_path, rest)
    assert more[2]["full"] == contents[2] and more[3]["full"] == contents[3]


def test_renamed_and_vanished_files(tmp_path):
    rows, contents = _folder(tmp_path, [100, 100])
    # Another session flagged message 1 (its file moved to cur/ with an info suffix) and
    # expunged message 2 (its file is gone) after this view learnt their names.
    first = rows[0][4]
    os.rename(tmp_path / first, tmp_path / "cur" / (maildir.base_name(first) + ":2,S"))
    os.unlink(tmp_path / rows[1][4])
    details, data, _, rest = _load(tmp_path, rows, time.perf_counter() + 60)
    assert rest == [] and list(data) == [1] and data[1]["full"] == contents[1]
    assert details[1][3] == "cur/" + maildir.base_name(first) + ":2,S"


@pytest.mark.parametrize("command", [b"a FETCH 1 (BODY.PEEK[HEADER])", b"a FETCH 1 (ENVELOPE)"])
def test_plans_that_need_cached_columns_read_the_index(command):
    # Such plans never take the known-rows path (`Selected._load` checks `plan.cache`).
    plan = fetch.compile_plan(list(protocol.parse_command(command).args.attributes))  # type: ignore[union-attr]
    assert plan.cache
