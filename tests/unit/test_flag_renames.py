"""store.renames: flag renames wait for a quiet moment, keep commit order, and are never lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from openmailserver.store.renames import FlagRenames


def _folder(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    (tmp_path / "cur").mkdir()
    names = []
    for i in range(count):
        name = f"cur/{i}.x:2,"
        (tmp_path / name).write_bytes(b"m")
        names.append(name)
    return tmp_path, names


def _on_disk(folder: Path) -> set[str]:
    return {"cur/" + p.name for p in (folder / "cur").iterdir()}


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
    r.queue(folder, [(n, n + "S") for n in names])
    time.sleep(0.3)
    assert _on_disk(folder) == set(names)  # still the old names: a command is running
    r.command_ended()
    took = _wait_for(lambda: _on_disk(folder) == {n + "S" for n in names})
    assert took >= 0.03  # not before the quiet time after the command


def test_renames_go_once_they_have_waited_long_enough_however_busy(tmp_path, renames):
    folder, names = _folder(tmp_path, 2)
    r = renames(quiet=0.05, patience=0.4)
    r.command_started()  # never ends
    queued = time.monotonic()
    r.queue(folder, [(n, n + "S") for n in names])
    _wait_for(lambda: _on_disk(folder) == {n + "S" for n in names})
    assert time.monotonic() - queued >= 0.35


def test_commit_order_holds_across_slices_and_batches(tmp_path, renames):
    folder, names = _folder(tmp_path, 10)
    r = renames(quiet=0.0, patience=5.0, slice_size=3)
    r.command_started()
    r.queue(folder, [(n, n + "S") for n in names])  # \Seen
    r.queue(folder, [(n + "S", n + "FS") for n in names])  # then \Flagged too
    r.queue(folder, [(names[0] + "FS", names[0] + "F")])  # then \Seen off the first
    r.command_ended()
    want = {names[0] + "F"} | {n + "FS" for n in names[1:]}
    _wait_for(lambda: _on_disk(folder) == want)


def test_close_does_what_is_pending_at_once_and_later_renames_happen_in_place(tmp_path):
    folder, names = _folder(tmp_path, 4)
    r = FlagRenames(quiet=10.0, patience=10.0)
    r.command_started()
    r.queue(folder, [(n, n + "S") for n in names[:2]])
    started = time.monotonic()
    r.close()
    assert time.monotonic() - started < 2
    assert _on_disk(folder) == {names[0] + "S", names[1] + "S", names[2], names[3]}
    r.queue(folder, [(n, n + "S") for n in names[2:]])  # after close: done by the caller
    assert _on_disk(folder) == {n + "S" for n in names}


def test_a_file_gone_meanwhile_does_not_stop_the_others(tmp_path, renames):
    folder, names = _folder(tmp_path, 3)
    (folder / names[1]).unlink()  # expunged before its rename ran
    r = renames(quiet=0.0, patience=5.0)
    r.queue(folder, [(n, n + "S") for n in names])
    _wait_for(lambda: _on_disk(folder) == {names[0] + "S", names[2] + "S"})


def test_an_unexpected_error_in_one_batch_does_not_stop_the_thread(tmp_path, renames):
    folder, names = _folder(tmp_path, 1)
    r = renames(quiet=0.0, patience=5.0)
    r.queue(folder, [(None, None)])  # type: ignore[list-item] - os.rename raises TypeError
    r.queue(folder, [(names[0], names[0] + "S")])
    _wait_for(lambda: _on_disk(folder) == {names[0] + "S"})
