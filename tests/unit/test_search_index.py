"""`mailstate.header_matches`: SUBJECT/FROM SEARCH over the message index (RFC 3501 §6.4.4:
case-insensitive substring), SQLite preselecting the rows; checked against `str.casefold`."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from openmailserver.store import mailstate

SUBJECTS = [
    "Invoice 42 for you", "no match here", "100% sure_thing", "back\\slash", "Straße und Weg",
    "Temperature 300 \u212a", "ＦＵＬＬＷＩＤＴＨ invoice", "", "İstanbul trip", "ﬁle attached",
]


def _conn(subjects: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE messages (folder_id INTEGER, uid INTEGER, subject TEXT, from_addr TEXT)")
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)",
                     [(1, uid, s, f"Sender <{uid}@example.org>") for uid, s in enumerate(subjects, 1)])
    conn.execute("INSERT INTO messages VALUES (2, 1, 'Invoice in another folder', 'x')")
    return conn


def _expected(subjects: list[str], needle: str) -> set[int]:
    return {uid for uid, s in enumerate(subjects, 1) if needle in s.casefold()}


def test_ascii_needles_match_like_casefold() -> None:
    conn = _conn(SUBJECTS)
    for needle in ["invoice", "%", "_", "0% s", "\\", "e_t", "k", "ss", "fi", "i", "zzz"]:
        assert mailstate.header_matches(conn, 1, "subject", needle) == _expected(SUBJECTS, needle), needle


def test_needles_beyond_ascii() -> None:
    conn = _conn(SUBJECTS)
    for needle in ["straße".casefold(), "ｆｕｌｌ", "i̇stanbul", "ß"]:
        assert mailstate.header_matches(conn, 1, "subject", needle) == _expected(SUBJECTS, needle), needle


def test_from_column_and_folder_scope() -> None:
    conn = _conn(SUBJECTS)
    assert mailstate.header_matches(conn, 1, "from", "3@example") == {3}
    assert mailstate.header_matches(conn, 2, "subject", "invoice") == {1}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=8), st.text(min_size=1, max_size=4))
def test_same_as_casefold_substring(subjects: list[str], needle: str) -> None:
    needle = needle.casefold()
    conn = _conn(subjects)
    assert mailstate.header_matches(conn, 1, "subject", needle) == _expected(subjects, needle)
