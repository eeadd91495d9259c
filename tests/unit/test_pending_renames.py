"""Flag renames run behind the index (`store.renames`, one thread per worker process): they
wait for a quiet moment, give each file the name the index holds when they run (so an earlier
change never undoes a later one, in whichever worker it was queued) and are never lost;
meanwhile files are found under the name they have now, and a folder is listed once per batch,
not once per file."""

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


class Index:
    """The file names an index holds for one folder: UID n is the n-th file made."""

    def __init__(self, names: list[str]) -> None:
        self.names = dict(enumerate(names, 1))

    def current(self, folder_id: int, uids: list[int]) -> dict[int, str]:
        return {uid: self.names[uid] for uid in uids if uid in self.names}

    def flag(self, uids: list[int], flags: str) -> mailstate.Renames:
        """A flag change commits: the index gets the new names; the renames are what is queued."""
        renames = [(uid, self.names[uid]) for uid in uids]
        for uid in uids:
            self.names[uid] = _flagged(self.names[uid], flags)
        return renames


def test_renames_find_moved_files_and_skip_gone_ones(tmp_path):
    folder, names = _folder(tmp_path, 4)
    # Another writer already flagged file 1 (\Flagged); file 2 was expunged; file 3 is
    # already where this batch wants it.
    (folder / names[1]).rename(folder / _flagged(names[1], "F"))
    (folder / names[2]).unlink()
    (folder / names[3]).rename(folder / _flagged(names[3], "S"))
    index = Index(names)
    renames = index.flag([1, 2, 3, 4], "S")
    del index.names[3]  # expunged
    mailstate.rename_files(folder, renames, lambda uids: index.current(1, uids))
    assert sorted(p.name for p in (folder / "cur").iterdir()) == sorted(
        Path(_flagged(n, "S")).name for n in (names[0], names[1], names[3]))
    assert not list((folder / "new").iterdir())


def test_a_batch_of_misses_lists_the_folder_once(tmp_path, monkeypatch):
    folder, names = _folder(tmp_path, 50)
    for name in names:  # every file moved by another tool meanwhile
        (folder / name).rename(folder / _flagged(name, "T"))
    listings = []
    real = maildir.list_files
    monkeypatch.setattr(maildir, "list_files", lambda path: listings.append(path) or real(path))
    index = Index(names)
    mailstate.rename_files(folder, index.flag(list(range(1, 51)), "S"), lambda uids: index.current(1, uids))
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
        pending: list[mailstate.Renames] = []
        db.write(mailstate.store_flags, inbox["id"], folder, list(range(1, 21)), "add", ["\\Deleted"],
                 lambda _id, _path, renames: pending.append(renames))
        assert len(pending[0]) == 20 and all((folder / name).exists() for name in names)
        (folder / names[0]).rename(folder / _flagged(names[0], "S"))  # another tool moved one too
        assert sorted(db.write(mailstate.expunge, mailbox["id"], inbox["id"], folder)) == list(range(1, 21))
        assert not list((folder / "new").iterdir()) and not list((folder / "cur").iterdir())
        # The late renames find nothing, and fail nothing.
        mailstate.rename_files(folder, pending[0], lambda uids: db.read(mailstate.filenames, inbox["id"], uids))
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

    def make(index: Index, **kwargs) -> FlagRenames:
        made.append(FlagRenames(index.current, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_renames_wait_while_a_command_runs_and_go_when_it_has_ended(tmp_path, renames):
    folder, names = _folder(tmp_path, 3)
    index = Index(names)
    r = renames(index, quiet=0.05, patience=5.0)
    r.command_started()
    r.queue(1, folder, index.flag([1, 2, 3], "S"))
    time.sleep(0.3)
    assert _on_disk(folder) == set(names)  # still the old names: a command is running
    r.command_ended()
    took = _wait_for(lambda: _on_disk(folder) == {_flagged(n, "S") for n in names})
    assert took >= 0.03  # not before the quiet time after the command


def test_renames_go_once_they_have_waited_long_enough_however_busy(tmp_path, renames):
    folder, names = _folder(tmp_path, 2)
    index = Index(names)
    r = renames(index, quiet=0.05, patience=0.4)
    r.command_started()  # never ends
    queued = time.monotonic()
    r.queue(1, folder, index.flag([1, 2], "S"))
    _wait_for(lambda: _on_disk(folder) == {_flagged(n, "S") for n in names})
    assert time.monotonic() - queued >= 0.35


def test_files_end_with_the_index_names_across_slices_and_batches(tmp_path, renames):
    folder, names = _folder(tmp_path, 10)
    index = Index(names)
    r = renames(index, quiet=0.0, patience=5.0, slice_size=3)
    r.command_started()
    uids = list(range(1, 11))
    r.queue(1, folder, index.flag(uids, "S"))  # \Seen
    r.queue(1, folder, index.flag(uids, "FS"))  # then \Flagged too
    r.queue(1, folder, index.flag([1], "F"))  # then \Seen off the first
    r.command_ended()
    want = {_flagged(names[0], "F")} | {_flagged(n, "FS") for n in names[1:]}
    _wait_for(lambda: _on_disk(folder) == want)


def test_an_earlier_change_queued_in_another_worker_never_undoes_a_later_one(tmp_path, renames):
    # Two workers' rename threads over one index: the first worker is busy, so the rename of
    # the earlier change runs last. It must leave the name of the later change.
    folder, names = _folder(tmp_path, 3)
    index = Index(names)
    busy = renames(index, quiet=0.05, patience=5.0)
    idle = renames(index, quiet=0.0, patience=5.0)
    busy.command_started()
    busy.queue(1, folder, index.flag([1, 2, 3], "S"))
    idle.queue(1, folder, index.flag([1, 2], "FS"))
    want = {_flagged(names[0], "FS"), _flagged(names[1], "FS"), names[2]}
    _wait_for(lambda: _on_disk(folder) == want)
    busy.command_ended()
    want = {_flagged(names[0], "FS"), _flagged(names[1], "FS"), _flagged(names[2], "S")}
    _wait_for(lambda: _on_disk(folder) == want)
    time.sleep(0.1)
    assert _on_disk(folder) == want


def test_close_does_what_is_pending_at_once_and_later_renames_happen_in_place(tmp_path):
    folder, names = _folder(tmp_path, 4)
    index = Index(names)
    r = FlagRenames(index.current, quiet=10.0, patience=10.0)
    r.command_started()
    r.queue(1, folder, index.flag([1, 2], "S"))
    started = time.monotonic()
    r.close()
    assert time.monotonic() - started < 2
    assert _on_disk(folder) == {_flagged(names[0], "S"), _flagged(names[1], "S"), names[2], names[3]}
    r.queue(1, folder, index.flag([3, 4], "S"))  # after close: done by the caller
    assert _on_disk(folder) == {_flagged(n, "S") for n in names}


def test_a_file_gone_or_an_unexpected_error_does_not_stop_the_thread(tmp_path, renames):
    folder, names = _folder(tmp_path, 3)
    (folder / names[1]).unlink()  # expunged before its rename ran
    index = Index(names)
    r = renames(index, quiet=0.0, patience=5.0)
    r.queue(1, folder, [(None, None)])  # type: ignore[list-item] - the index lookup raises TypeError
    r.queue(1, folder, index.flag([1, 2, 3], "S"))
    _wait_for(lambda: _on_disk(folder) == {_flagged(names[0], "S"), _flagged(names[2], "S")})


def test_a_flag_set_and_cleared_again_brings_the_file_back_to_its_first_name(tmp_path):
    # Another worker ran the rename of the set (file now :2,S) before this one runs that of the
    # clear, whose new name is the file's first one: the file must go back to it.
    folder, names = _folder(tmp_path, 1)
    index = Index(names)
    index.flag([1], "S")
    (folder / names[0]).rename(folder / index.names[1])
    index.names[1] = names[0]  # \Seen cleared: the index holds the first name again
    mailstate.rename_files(folder, [(1, names[0])], lambda uids: index.current(1, uids))
    assert _on_disk(folder) == {names[0]}
