"""fsync from the event loop without a thread: Linux native AIO (`IOCB_CMD_FSYNC`, kernel 4.18+).

A thread that runs an fsync has to take the GIL to start and again to report
back, and each time it waits for whatever Python code holds it; under load that
wait is as long as the fsync itself. Here the event loop hands the fsyncs to
the kernel in one `io_submit`, the kernel's own workers run them at once, side
by side, and an eventfd on the loop says when they are done. Where AIO is not
there (another kernel, a seccomp filter, no free AIO slots) `Fsyncer` runs the
same fsyncs in its thread pool instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import platform
from concurrent.futures import Executor
from pathlib import Path
from typing import Optional

from . import maildir

log = logging.getLogger(__name__)

# io_setup, io_destroy, io_submit, io_getevents (64-bit processes only)
_SYSCALLS = {"x86_64": (206, 207, 209, 208), "aarch64": (0, 1, 2, 4)} if ctypes.sizeof(ctypes.c_void_p) == 8 else {}
_IOCB_CMD_FSYNC = 2
_IOCB_FLAG_RESFD = 1


class _Iocb(ctypes.Structure):  # struct iocb, <linux/aio_abi.h> (little-endian layout)
    _fields_ = [("data", ctypes.c_uint64), ("key", ctypes.c_uint32), ("rw_flags", ctypes.c_int32),
                ("opcode", ctypes.c_uint16), ("reqprio", ctypes.c_int16), ("fildes", ctypes.c_uint32),
                ("buf", ctypes.c_uint64), ("nbytes", ctypes.c_uint64), ("offset", ctypes.c_int64),
                ("reserved2", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("resfd", ctypes.c_uint32)]


class _Event(ctypes.Structure):  # struct io_event
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


def _fsync_paths(paths: list[tuple[Path, int]]) -> None:
    for path, mode in paths:
        maildir.fsync_path(path, mode)


class _Group:
    """The fsyncs of one `start`: settles `outcome` when the last of them is done."""

    __slots__ = ("outcome", "paths", "fds", "left", "failure")

    def __init__(self, outcome: asyncio.Future, paths: list[tuple[Path, int]], fds: list[int], left: int) -> None:
        self.outcome, self.paths, self.fds, self.left = outcome, paths, fds, left
        self.failure: Optional[BaseException] = None

    def one_done(self, failure: Optional[BaseException]) -> None:
        self.failure = self.failure or failure
        self.left -= 1
        if self.left:
            return
        for fd in self.fds:  # (an fsync in flight holds its own reference to the file)
            os.close(fd)
        if not self.outcome.done() and not self.outcome.get_loop().is_closed():
            if self.failure:
                self.outcome.set_exception(self.failure)
            else:
                self.outcome.set_result(None)


class Fsyncer:
    """fsyncs started from the event loop (`start`), through kernel AIO or else the thread pool."""

    def __init__(self, pool: Executor, kernel_aio: bool = True, slots: int = 512) -> None:
        self.pool = pool
        self.slots = slots  # fsyncs in flight through AIO at once; beyond that, threads
        self._calls = _SYSCALLS.get(platform.machine())
        self._usable = kernel_aio and self._calls is not None
        self._libc: Optional[ctypes.CDLL] = None
        self._ctx = ctypes.c_ulong(0)
        self._efd = -1
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._waiting: dict[int, tuple[_Group, int]] = {}  # AIO request -> its group, index in it
        self._next = 0
        self._refused = False  # logged once
        self._events = (_Event * 64)()
        # Control blocks, filled in again for each io_submit: the kernel copies them in the call.
        self._blocks = (_Iocb * slots)()
        self._pointers = (ctypes.POINTER(_Iocb) * slots)(*(ctypes.pointer(b) for b in self._blocks))
        for block in self._blocks:
            block.opcode, block.flags = _IOCB_CMD_FSYNC, _IOCB_FLAG_RESFD

    def start(self, files: list[Path], directories: list[Path]) -> asyncio.Future:
        """Start fsyncing `files` and `directories`; the future settles when all are done
        (with the first OSError if any failed)."""
        paths = [(f, os.O_RDONLY) for f in files] + [(d, os.O_RDONLY | os.O_DIRECTORY) for d in directories]
        loop = asyncio.get_running_loop()
        outcome = loop.create_future()
        if not paths:
            outcome.set_result(None)
            return outcome
        if not self._ready(loop, len(paths)):
            return loop.run_in_executor(self.pool, _fsync_paths, paths)
        fds: list[int] = []
        try:
            for path, flags in paths:
                fds.append(os.open(path, flags))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            outcome.set_exception(exc)
            return outcome
        taken = self._submit(fds)
        group = _Group(outcome, paths, fds, taken + (taken < len(fds)))
        for i, number in enumerate(range(self._next - taken + 1, self._next + 1)):
            self._waiting[number] = (group, i)
        if taken < len(fds):  # the kernel took only some (or none): the rest in a thread
            rest = loop.run_in_executor(self.pool, _fsync_paths, paths[taken:])
            rest.add_done_callback(lambda f: group.one_done(
                asyncio.CancelledError() if f.cancelled() else f.exception()))
        return outcome

    def _ready(self, loop: asyncio.AbstractEventLoop, count: int) -> bool:
        """Whether these fsyncs can go through AIO from this loop (set up on first use)."""
        if not self._usable or len(self._waiting) + count > self.slots:
            return False
        if self._loop is not None and self._loop.is_closed():  # a new loop (a CLI command run again)
            self._teardown()
        if self._loop is None:
            try:
                self._open(loop)
            except OSError as exc:
                log.info("kernel AIO is not available (%s); fsyncs run in threads", exc)
                self._usable = False
                return False
        return self._loop is loop

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._calls is not None
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        if self._libc.syscall(ctypes.c_long(self._calls[0]), ctypes.c_long(self.slots), ctypes.byref(self._ctx)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        for block in self._blocks:
            block.resfd = self._efd
        loop.add_reader(self._efd, self._collect)
        self._loop = loop

    def _submit(self, fds: list[int]) -> int:
        """One io_submit for `fds`, numbered from `_next + 1`; how many the kernel took."""
        assert self._libc is not None and self._calls is not None
        for block, fd in zip(self._blocks, fds):
            self._next += 1
            block.data, block.fildes = self._next, fd
        taken = self._libc.syscall(ctypes.c_long(self._calls[2]), self._ctx, ctypes.c_long(len(fds)),
                                   self._pointers)
        if taken < 0:
            # The first one was refused: a file without fsync (EINVAL, which the thread then
            # reports), a kernel without AIO fsync (the thread does it), no slots (EAGAIN).
            code = ctypes.get_errno()
            if code != errno.EAGAIN and not self._refused:
                self._refused = True
                log.warning("kernel AIO refused an fsync (%s); it goes to a thread", os.strerror(code))
            taken = 0
        self._next -= len(fds) - taken  # numbers the kernel did not take are used again
        return taken

    def _collect(self) -> None:
        """The eventfd says some fsyncs finished: count them off their groups."""
        assert self._libc is not None and self._calls is not None
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            return
        no_wait = (ctypes.c_long * 2)(0, 0)
        while True:
            got = self._libc.syscall(ctypes.c_long(self._calls[3]), self._ctx, ctypes.c_long(0),
                                     ctypes.c_long(len(self._events)), self._events, no_wait)
            if got <= 0:
                return
            self._settle(got)
            if got < len(self._events):
                return

    def _settle(self, got: int) -> None:
        for event in self._events[:got]:
            waiting = self._waiting.pop(event.data, None)
            if waiting is None:
                continue
            group, i = waiting
            failure = None
            if event.res < 0:
                failure = OSError(-event.res, os.strerror(-event.res), str(group.paths[i][0]))
            group.one_done(failure)

    def close(self) -> None:
        """Wait for the fsyncs in flight, settle them, and let go of the AIO context."""
        self._teardown()
        self._usable = False

    def _teardown(self) -> None:
        if self._loop is None or self._libc is None or self._calls is None:
            return
        while self._waiting:  # blocking: the kernel finishes what it has begun
            got = self._libc.syscall(ctypes.c_long(self._calls[3]), self._ctx, ctypes.c_long(1),
                                     ctypes.c_long(len(self._events)), self._events, None)
            if got <= 0:
                break
            self._settle(got)
        self._waiting.clear()
        if not self._loop.is_closed():
            self._loop.remove_reader(self._efd)
        self._libc.syscall(ctypes.c_long(self._calls[1]), self._ctx)
        os.close(self._efd)
        self._loop = None
        self._ctx = ctypes.c_ulong(0)
