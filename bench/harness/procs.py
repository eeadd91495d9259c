"""Every process a benchmark starts, and the guarantee that it ends.

Each child runs in a session of its own (so a Ctrl-C in the terminal reaches
only the harness, which then stops the children in order) and is registered
here. `Processes` is a context manager: on leaving it, normally or through an
exception, KeyboardInterrupt or SIGTERM, it runs the registered stop actions
newest first (e.g. `postfix stop`), then terminates whatever is still alive,
process group by process group, SIGTERM first and SIGKILL after a grace
period.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

GRACE = 10.0


class Processes:
    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []
        self._stoppers: list[tuple[str, Callable[[], None]]] = []

    def spawn(self, argv: Sequence[str | os.PathLike], *, log: Path | None = None,
              env: dict[str, str] | None = None, cwd: Path | None = None,
              pipe_stdout: bool = False) -> subprocess.Popen:
        """Start argv in its own session; stdout and stderr go to `log` (or nowhere), or
        stdout to a pipe (`proc.stdout`) when `pipe_stdout`."""
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE if pipe_stdout else out,
                                    stderr=out if pipe_stdout else subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        finally:
            if log:
                out.close()
        self._procs.append(proc)
        return proc

    def on_exit(self, label: str, action: Callable[[], None]) -> Callable[[], None]:
        """Register a stop action; returns a function that runs it now (once) instead."""
        entry = (label, action)
        self._stoppers.append(entry)

        def run_now() -> None:
            if entry in self._stoppers:
                self._stoppers.remove(entry)
                action()
        return run_now

    def stop(self, proc: subprocess.Popen, grace: float = GRACE) -> int:
        """SIGTERM the process group, wait, then SIGKILL it; returns the exit code."""
        if proc.returncode is None:
            # The leader is not reaped before the SIGKILL below, so its pid, which names
            # the group, cannot have been reused by an unrelated process.
            _signal_group(proc.pid, signal.SIGTERM)
            _wait_unreaped(proc.pid, grace)
            # Anything left in the group (a child that outlived its parent) goes too.
            _signal_group(proc.pid, signal.SIGKILL)
        code = proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)
        return code

    def close(self) -> None:
        errors: list[str] = []
        while self._stoppers:
            label, action = self._stoppers.pop()
            try:
                action()
            except Exception as exc:  # keep stopping the rest
                errors.append(f"{label}: {exc}")
        while self._procs:
            self.stop(self._procs[-1])
        if errors:
            raise RuntimeError("cleanup failed: " + "; ".join(errors))

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc_info) -> None:
        # A second Ctrl-C while cleaning up must not leave processes behind.
        with deferred_signals():
            self.close()


def _wait_unreaped(pid: int, timeout: float) -> None:
    """Wait until the child has exited, leaving it a zombie (not reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.02)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int | None) -> bool:
    """Whether any process is left in the process group."""
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of a process group that is not one of our children's."""
    _signal_group(pgid, signal.SIGKILL)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM/SIGHUP inside the block (used while cleaning up)."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def raise_on_termination() -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt, like Ctrl-C, so cleanup runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process for {host}:{port} exited during start-up")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (servers started later inherit
    it): the memory benchmark holds a thousand connections. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
