"""Flag renames run behind the index (one background thread per daemon): files are found
under the name they have now, and a folder is listed once per batch, not once per file."""

from __future__ import annotations

from pathlib import Path

from openmailserver.store import accounts, maildir, mailstate, messages
from openmailserver.store.db import Database


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
    from openmailserver.imap.mailbox import FileFinder, _link_files

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
    copies = _link_files(folder, _folder(tmp_path / "dst", 0)[0], [(indexed[0], 5)])
    assert copies[0] is not None and copies[0].startswith("cur/") and copies[0].endswith(":2,FS")
    (folder / names[0]).unlink()
    try:
        maildir.read_message(folder, indexed[0])
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a file that is gone must be FileNotFoundError")
