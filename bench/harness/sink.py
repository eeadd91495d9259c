"""Postfix's `smtp-sink` on a loopback port, counting the messages it accepted.

smtp-sink takes SMTP mail and throws it away, answering 250 to each message.
With `-c` it writes running counters ("sess=N quit=N mesg=N", separated by
carriage returns) to its stdout as each message ends; a reader thread parses
them and notes, with time.monotonic(), when each count was first reached, so
"the moment the sink answered 250 to the last message" is known without
touching the disk.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from bench.harness.procs import Processes, free_port, wait_for_port

SMTP_SINK = "/usr/sbin/smtp-sink"
USER = "nobody"  # smtp-sink refuses to run as root without -u
BACKLOG = 256
POLL = 0.02  # seconds between looks at the count while waiting
_COUNT = re.compile(rb"mesg=(\d+)")


class SmtpSink:
    def __init__(self, procs: Processes, log: Path, hostname: str = "sink.test") -> None:
        self.procs = procs
        self.log = log
        self.hostname = hostname
        self.port = free_port()
        self.count = 0
        self._reached: dict[int, float] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "SmtpSink":
        argv = [SMTP_SINK, "-c", "-h", self.hostname]
        if os.geteuid() == 0:
            argv += ["-u", USER]
        argv += [f"127.0.0.1:{self.port}", str(BACKLOG)]
        self._proc = self.procs.spawn(argv, log=self.log, pipe_stdout=True)
        self._reader = threading.Thread(target=self._read, name="smtp-sink-counter", daemon=True)
        self._reader.start()
        wait_for_port("127.0.0.1", self.port, 10, alive=lambda: self._proc.poll() is None)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self.procs.stop(self._proc)
            if self._reader is not None:
                self._reader.join(timeout=5)
            self._proc.stdout.close()
            self._proc = None

    def _read(self) -> None:
        buffer = b""
        stream = self._proc.stdout
        while chunk := os.read(stream.fileno(), 65536):
            now = time.monotonic()
            buffer += chunk
            *complete, buffer = buffer.split(b"\r")
            counts = [int(m.group(1)) for line in complete if (m := _COUNT.search(line))]
            if not counts:
                continue
            with self._lock:
                for value in range(self.count + 1, max(counts) + 1):
                    self._reached[value] = now
                self.count = max(self.count, *counts)

    def reached(self, count: int) -> float | None:
        """When the sink had accepted `count` messages (time.monotonic()), if it has."""
        with self._lock:
            return self._reached.get(count)

    async def wait_for(self, count: int, timeout: float) -> float:
        """Until the sink has accepted `count` messages in all; returns when it had (the
        reader thread's timestamp, so the polling interval does not blur the figure)."""
        deadline = time.monotonic() + timeout
        while (at := self.reached(count)) is None:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"smtp-sink exited after {self.count} messages")
            if time.monotonic() > deadline:
                raise TimeoutError(f"smtp-sink accepted only {self.count} of {count} messages after {timeout}s")
            await asyncio.sleep(POLL)
        return at
