"""Flag renames run behind the index (`store.renames`, one thread per daemon): they wait for
a quiet moment, keep commit order and are never lost; meanwhile files are found under the
name they have now, and a folder is listed once per batch, not once per file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from openmailserver.store import accounts, maildir, mailstate, messages
from openmailserver.store.db import Database
from openmailserver.store.renames import FlagRenames


def _folder(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    tmp_path.mkdir(exist_ok=True)
    for sub in ("new", "cur", "tmp"):
        (tmp_path / sub).mkdir()
    names = []
    for n in range(count):
        name = f"new/{n}.M1P1Q{n}.host,S=5"
        (tmp_path / name).write_bytes(b"hello")
        names.append(name)
    return tmp_path, names


def _flagged(name: str, flags: str) -> str:
    return f"cur/{maildir.base_name(name)}:2,{flags}"


def test_renames_find_moved_files_and_skip_gone_ones(tmp_path):
    folder, names = _folder(tmp_path, 4)
    # Another writer already flagged file 1 (\Flagged); file 2 was expunged; file 3 is
    # already where this batch wants it.
    (folder / names[1]).rename(folder / _flagged(names[1], "F"))
    (folder / names[2]).unlink()
    (folder / names[3]).rename(folder / _flagged(names[3], "S"))
    mailstate.rename_files(folder, [(n, _flagged(n, "S")) for n in names])
    assert sorted(p.name for p in (folder / "cur").iterdir()) == sorted(
        Path(_flagged(n, "S")).name for n in (names[0], names[1], names[3]))
    assert not list((folder / "new").iterdir())


def test_a_batch_of_misses_lists_the_folder_once(tmp_path, monkeypatch):
    folder, names = _folder(tmp_path, 50)
    for name in names:  # every file moved on by a later change than this batch knows
        (folder / name).rename(folder / _flagged(name, "T"))
    listings = []
    real = maildir.list_files
    monkeypatch.setattr(maildir, "list_files", lambda path: listings.append(path) or real(path))
    mailstate.rename_files(folder, [(n, _flagged(n, "S")) for n in names])
    assert len(listings) == 1
    assert sorted(p.name for p in (folder / "cur").iterdir()) == sorted(Path(_flagged(n, "S")).name for n in names)


def test_locator_refreshes_only_when_asked(tmp_path):
    folder, names = _folder(tmp_path, 1)
    locator = maildir.Locator(folder)
    assert locator.find(names[0]) == names[0]
    moved = _flagged(names[0], "S")
    (folder / names[0]).rename(folder / moved)
    assert locator.find(names[0]) == names[0]  # the listing it took
    assert locator.find(names[0], refresh=True) == moved
    (folder / moved).unlink()
    assert locator.find(moved, refresh=True) is None


def test_expunge_removes_files_whose_flag_renames_have_not_happened(tmp_path):
    # STORE +FLAGS (\Deleted) commits the new names at once and leaves the renames to a
    # background thread; an EXPUNGE that comes first must still remove every file.
    folder, names = _folder(tmp_path / "mail", 20)
    db = Database(tmp_path / "index.db")
    try:
        mailbox = db.write(lambda conn: accounts.insert_mailbox(
            conn, address="u@pending.test", local_part="u", password_hash="x", quota_bytes=0,
            domain_id=accounts.insert_domain(conn, "pending.test", "oms", "unused-key")["id"]))
        for name in names:
            db.write(lambda conn, name=name: messages.record_message(
                conn, mailbox_id=mailbox["id"], folder="INBOX", filename=name, size=5, meta={}, event_type=None))
        inbox = db.read(messages.get_folder, mailbox["id"], "INBOX")
        pending: list[list[tuple[str, str]]] = []
        db.write(mailstate.store_flags, inbox["id"], folder, list(range(1, 21)), "add", ["\\Deleted"],
                 lambda _path, renames: pending.append(renames))
        assert len(pending[0]) == 20 and all((folder / name).exists() for name in names)
        (folder / names[0]).rename(folder / _flagged(names[0], "S"))  # another tool moved one too
        assert sorted(db.write(mailstate.expunge, mailbox["id"], inbox["id"], folder)) == list(range(1, 21))
        assert not list((folder / "new").iterdir()) and not list((folder / "cur").iterdir())
        mailstate.rename_files(folder, pending[0])  # the late renames find nothing, and fail nothing
    finally:
        db.close()


def test_readers_find_a_file_whose_rename_is_pending(tmp_path):
    from openmailserver.imap.files import FileFinder, link_files

    folder, names = _folder(tmp_path / "src", 2)
    indexed = [_flagged(n, "FS") for n in names]  # what the index says; the renames have not run
    assert maildir.read_message(folder, indexed[0]) == b"hello"  # the API's raw and agent views
    finder = FileFinder(folder)
    try:
        (folder / names[1]).rename(folder / _flagged(names[1], "F"))  # half-way there meanwhile
        assert finder.read(indexed[1]) == (b"hello", _flagged(names[1], "F"))  # IMAP FETCH
    finally:
        finder.close()
    # COPY names the copy with the flags the index gives, not those of the old name.
    copies = link_files(folder, _folder(tmp_path / "dst", 0)[0], [(indexed[0], 5)])
    assert copies[0] is not None and copies[0].startswith("cur/") and copies[0].endswith(":2,FS")
    (folder / names[0]).unlink()
    try:
        maildir.read_message(folder, indexed[0])
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a file that is gone must be FileNotFoundError")


def _on_disk(folder: Path) -> set[str]:
    return set(maildir.list_files(folder).values())


def _all_flagged(names: list[str], flags: str) -> list[tuple[str, str]]:
    return [(n, _flagged(n, flags)) for n in names]


def _wait_for(condition, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail("timed out")
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
def renames():
    made = []

    def make(**kwargs) -> FlagRenames:
        made.append(FlagRenames(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_renames_wait_while_a_command_runs_and_go_when_it_has_ended(tmp_path, renames):
    folder, names = _folder(tmp_path, 3)
    r = renames(quiet=0.05, patience=5.0)
    r.command_started()
    r.queue(folder, _all_flagged(names, "S"))
    time.sleep(0.3)
    assert _on_disk(folder) == set(names)  # still the old names: a command is running
    r.command_ended()
    took = _wait_for(lambda: _on_disk(folder) == {_flagged(n, "S") for n in names})
    assert took >= 0.03  # not before the quiet time after the command


def test_renames_go_once_they_have_waited_long_enough_however_busy(tmp_path, renames):
    folder, names = _folder(tmp_path, 2)
    r = renames(quiet=0.05, patience=0.4)
    r.command_started()  # never ends
    queued = time.monotonic()
    r.queue(folder, _all_flagged(names, "S"))
    _wait_for(lambda: _on_disk(folder) == {_flagged(n, "S") for n in names})
    assert time.monotonic() - queued >= 0.35


def test_commit_order_holds_across_slices_and_batches(tmp_path, renames):
    folder, names = _folder(tmp_path, 10)
    r = renames(quiet=0.0, patience=5.0, slice_size=3)
    r.command_started()
    r.queue(folder, _all_flagged(names, "S"))  # \Seen
    r.queue(folder, [(_flagged(n, "S"), _flagged(n, "FS")) for n in names])  # then \Flagged too
    r.queue(folder, [(_flagged(names[0], "FS"), _flagged(names[0], "F"))])  # then \Seen off the first
    r.command_ended()
    want = {_flagged(names[0], "F")} | {_flagged(n, "FS") for n in names[1:]}
    _wait_for(lambda: _on_disk(folder) == want)


def test_close_does_what_is_pending_at_once_and_later_renames_happen_in_place(tmp_path):
    folder, names = _folder(tmp_path, 4)
    r = FlagRenames(quiet=10.0, patience=10.0)
    r.command_started()
    r.queue(folder, _all_flagged(names[:2], "S"))
    started = time.monotonic()
    r.close()
    assert time.monotonic() - started < 2
    assert _on_disk(folder) == {_flagged(names[0], "S"), _flagged(names[1], "S"), names[2], names[3]}
    r.queue(folder, _all_flagged(names[2:], "S"))  # after close: done by the caller
    assert _on_disk(folder) == {_flagged(n, "S") for n in names}


def test_a_file_gone_or_an_unexpected_error_does_not_stop_the_thread(tmp_path, renames):
    folder, names = _folder(tmp_path, 3)
    (folder / names[1]).unlink()  # expunged before its rename ran
    r = renames(quiet=0.0, patience=5.0)
    r.queue(folder, [(None, None)])  # type: ignore[list-item] - os.rename raises TypeError
    r.queue(folder, _all_flagged(names, "S"))
    _wait_for(lambda: _on_disk(folder) == {_flagged(names[0], "S"), _flagged(names[2], "S")})
