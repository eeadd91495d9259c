"""store.aio: fsyncs started from the event loop, through kernel AIO or a thread.

Linux has had AIO fsync since 4.18, and the daemon counts on it for its delivery latency:
these tests require it, so a machine without it fails them rather than skipping the path."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from openmailserver.store.aio import Fsyncer


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _files(folder: Path, count: int, prefix: str = "m") -> list[Path]:
    files = []
    for i in range(count):
        path = folder / f"{prefix}{i}"
        path.write_bytes(b"x" * 4096)
        files.append(path)
    return files


@pytest.fixture
def make_fsyncer():
    with ThreadPoolExecutor(max_workers=4) as pool:
        made: list[Fsyncer] = []

        def make(**kwargs) -> Fsyncer:
            made.append(Fsyncer(pool, **kwargs))
            return made[-1]

        yield make
        for fsyncer in made:
            fsyncer.close()


async def _through_aio(fsyncer: Fsyncer, folder: Path) -> None:
    """One fsync, which sets AIO up (its eventfd stays open); fails where there is no AIO."""
    await fsyncer.start(_files(folder, 1, "setup"), [])
    assert fsyncer._loop is asyncio.get_running_loop()  # noqa: SLF001 - which path runs is the point


@pytest.mark.parametrize("kernel_aio", [True, False], ids=["aio", "threads"])
def test_files_and_directories_are_fsynced_and_their_descriptors_closed(tmp_path, make_fsyncer, kernel_aio):
    fsyncer = make_fsyncer(kernel_aio=kernel_aio)

    async def run() -> None:
        if kernel_aio:
            await _through_aio(fsyncer, tmp_path)
        before = _open_fds()
        for round_ in range(20):
            await fsyncer.start(_files(tmp_path, 3, f"r{round_}-"), [tmp_path])
        assert _open_fds() == before
        assert (fsyncer._loop is not None) == kernel_aio  # noqa: SLF001
        assert not fsyncer._waiting  # noqa: SLF001

    asyncio.run(run())


def test_a_missing_file_fails_the_whole_sync_and_leaks_nothing(tmp_path, make_fsyncer):
    fsyncer = make_fsyncer()

    async def run() -> None:
        await _through_aio(fsyncer, tmp_path)
        before = _open_fds()
        present = _files(tmp_path, 2, "p")
        with pytest.raises(FileNotFoundError):
            await fsyncer.start([present[0], tmp_path / "gone", present[1]], [tmp_path])
        assert _open_fds() == before

    asyncio.run(run())


def test_an_fsync_the_kernel_refuses_reports_its_error_and_aio_stays_on(tmp_path, make_fsyncer):
    # procfs files have no fsync: io_submit refuses it (EINVAL), the thread's fsync then
    # fails the same way, and that is the error the caller sees.
    fsyncer = make_fsyncer()

    async def run() -> None:
        await _through_aio(fsyncer, tmp_path)
        with pytest.raises(OSError) as failed:
            await fsyncer.start([_files(tmp_path, 1, "ok")[0], Path("/proc/self/status")], [])
        assert failed.value.errno == 22
        assert fsyncer._usable  # noqa: SLF001
        await fsyncer.start(_files(tmp_path, 2, "after"), [tmp_path])
        assert not fsyncer._waiting  # noqa: SLF001

    asyncio.run(run())


def test_more_fsyncs_than_slots_go_to_threads_and_all_finish(tmp_path, make_fsyncer):
    fsyncer = make_fsyncer(slots=4)

    async def run() -> None:
        groups = [fsyncer.start(_files(tmp_path, 3, f"g{i}-"), [tmp_path]) for i in range(10)]
        in_flight = len(fsyncer._waiting)  # noqa: SLF001
        await asyncio.gather(*groups)
        assert 0 < in_flight <= 4
        assert not fsyncer._waiting  # noqa: SLF001

    asyncio.run(run())


def test_nothing_to_sync_is_done_at_once(make_fsyncer):
    fsyncer = make_fsyncer()

    async def run() -> None:
        assert fsyncer.start([], []).done()

    asyncio.run(run())


def test_each_new_event_loop_gets_a_context_of_its_own(tmp_path, make_fsyncer):
    fsyncer = make_fsyncer()
    loops = []

    async def run() -> None:
        await _through_aio(fsyncer, tmp_path)
        loops.append(fsyncer._loop)  # noqa: SLF001

    asyncio.run(run())
    asyncio.run(run())
    assert loops[0] is not loops[1]


def test_close_waits_for_fsyncs_in_flight_and_settles_them(tmp_path, make_fsyncer):
    fsyncer = make_fsyncer()

    async def run() -> None:
        await _through_aio(fsyncer, tmp_path)
        before = _open_fds()
        pending = fsyncer.start(_files(tmp_path, 5, "late"), [tmp_path])
        fsyncer.close()
        assert pending.done() and pending.exception() is None
        assert _open_fds() == before - 1  # the eventfd is closed too

    asyncio.run(run())
