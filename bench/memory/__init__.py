"""Memory with many idle connections: 1,000 IMAP sessions in IDLE (openmailserver
against a private Dovecot), and 1,000 WebSocket subscribers of /v1/ws (ours only)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import websockets

from bench.anchors import dovecot
from bench.anchors.dovecot import PrivateDovecot
from bench.harness.dns import DNSServer
from bench.harness.imap import open_idle
from bench.harness.measure import background_load, memory_kb, process_tree, settled_memory
from bench.harness.procs import Processes
from bench.harness.runner import OURS, Benchmark, Metric
from bench.targets.openmailserver import OpenMailserver

DOMAIN = "bench.test"
PASSWORD = "bench-memory-password-1"
OPENING = 25  # connections being set up at once
MB = 1024  # KiB


class Memory(Benchmark):
    name = "memory"
    anchor = "dovecot"
    debs = ("dovecot-imapd",)
    profiles = False
    columns = {
        "imap_baseline_mb": "IMAP: daemon before (PSS, MB)",
        "imap_kb_per_connection": "IMAP: KB / session",
        "imap_pss_mb": "IMAP: PSS (MB)",
        "imap_rss_sum_mb": "IMAP: RSS summed over processes (MB)",
        "imap_processes": "IMAP: processes",
        "imap_open_seconds": "IMAP: s to open all",
        "ws_baseline_mb": "WS: daemon before (PSS, MB)",
        "ws_processes": "WS: processes",
        "ws_kb_per_connection": "WS: KB / subscriber",
        "background_cpu_cores": "busy before run, other work (cores)",
    }

    def __init__(self, connections: int = 1000, users: int = 10) -> None:
        if connections % users:
            raise ValueError("connections must be a multiple of users")
        self.connections, self.users = connections, users
        self.metrics = (
            Metric("imap_mb", f"{connections:,} IMAP sessions in IDLE", "MB", higher_is_better=False,
                   target_value=250.0),
            Metric("ws_mb", f"{connections:,} WebSocket subscribers", "MB", higher_is_better=False, anchored=False),
        )
        self.title = f"Memory with {connections:,} idle IMAP sessions, and with {connections:,} WebSocket subscribers"
        self.short_title = f"Memory, {connections:,} idle connections"
        self.description = (
            f"**IMAP**: {connections:,} sessions ({users} mailboxes × {connections // users}) each LOGIN, SELECT "
            f"INBOX (empty) and IDLE, opened {OPENING} at a time from one asyncio client; once the figure has "
            f"settled (less than 1 % change over a second), the memory is read from /proc. For both servers it "
            f"is the proportional set size (PSS) summed over every process of the server — openmailserver's "
            f"supervisor and its workers (one per core, the default), Dovecot's master, auth and one `imap` "
            f"process per session — each shared page divided among the processes sharing it, since summing "
            f"RSS would count shared pages (libraries, and the pages a forked worker shares with the "
            f"supervisor) once per process; that sum is shown too. Dovecot's process, client "
            f"and per-user connection limits are raised to admit {connections:,} sessions (stock: 100 IMAP "
            f"processes, 10 sessions per user and address); its users' passwords are SHA512-CRYPT there, so "
            f"that {connections:,} logins take seconds (its auth cache still verifies each one), which changes "
            f"nothing in what is measured. The target: openmailserver under 250 MB. "
            f"**WebSocket**: a fresh daemon; {connections:,} clients ({users} mailboxes' API keys) connect to "
            f"`/v1/ws`, send `{{\"type\": \"subscribe\"}}` and wait for `subscribed`; the daemon's PSS, summed "
            f"over its processes, is read the same way. No anchor: neither Postfix nor Dovecot has a WebSocket event stream. The bench "
            f"process raises its open-file limit to the hard limit first; the servers inherit it.")

    def versions(self) -> dict[str, str | None]:
        return {"dovecot": dovecot.version()}

    def parameters(self) -> dict:
        return {"connections": self.connections, "mailboxes": self.users, "opened_at_once": OPENING}

    def setup(self) -> None:
        from passlib.hash import sha512_crypt

        self.dns = DNSServer().start()
        # 5000 rounds: glibc's default, and what `doveadm pw -s SHA512-CRYPT` makes.
        self.crypt_hash = sha512_crypt.using(rounds=5000).hash(PASSWORD)

    def teardown(self) -> None:
        self.dns.stop()

    def addresses(self) -> list[str]:
        return [f"user{n}@{DOMAIN}" for n in range(self.users)]

    def run_once(self, target: str, work: Path, procs: Processes, profile: Path | None = None) -> dict:
        work.mkdir(parents=True)
        work.chmod(0o755)
        result = {"background_cpu_cores": round(background_load(), 3)}
        if target == OURS:
            result.update(self._ours_imap(work / "imap", procs))
            result.update(self._ours_websocket(work / "ws", procs))
        else:
            result.update(self._dovecot_imap(work / "dovecot", procs))
        return result

    # -- IMAP ----------------------------------------------------------------------

    def _ours_imap(self, root: Path, procs: Processes) -> dict:
        server = OpenMailserver(procs, root, DOMAIN, self.dns.address).start()
        try:
            for address in self.addresses():
                server.create_mailbox(address.split("@")[0], password=PASSWORD)
            tree = lambda: process_tree(server.pid)  # noqa: E731
            baseline = settled_memory(tree)
            loaded, seconds = self._hold_imap(server.settings["imap_port"], tree)
        except Exception as exc:
            raise RuntimeError(f"openmailserver IMAP: {exc}\n{server.log_tail()}") from exc
        finally:
            server.stop()
        return _imap_figures(loaded, baseline, seconds, self.connections)

    def _dovecot_imap(self, root: Path, procs: Processes) -> dict:
        server = PrivateDovecot(procs, root, {address: self.crypt_hash for address in self.addresses()},
                                connections=self.connections, per_user=self.connections // self.users).start()
        try:
            tree = lambda: process_tree(server.pid)  # noqa: E731
            baseline = settled_memory(tree)
            loaded, seconds = self._hold_imap(server.port, tree)
        except Exception as exc:
            raise RuntimeError(f"dovecot IMAP: {exc}\n{server.log_tail()}") from exc
        finally:
            server.stop()
        return _imap_figures(loaded, baseline, seconds, self.connections)

    def _hold_imap(self, port: int, pids) -> tuple[dict, float]:
        """Open every session, read the settled memory, close them; returns (memory, seconds to open).

        The memory is read while the client's event loop is not running: the sessions
        stay open (they are idle) and no thread is left behind should a signal arrive."""
        users = self.addresses()
        with asyncio.Runner() as runner:
            gate = asyncio.Semaphore(OPENING)

            async def one(n: int):
                async with gate:
                    return await open_idle("127.0.0.1", port, users[n % self.users], PASSWORD)

            async def open_all() -> list:
                return await asyncio.gather(*(one(n) for n in range(self.connections)), return_exceptions=True)

            async def close_all(sessions: list) -> None:
                for _, writer in sessions:
                    writer.close()
                await asyncio.gather(*(writer.wait_closed() for _, writer in sessions), return_exceptions=True)

            started = time.monotonic()
            results = runner.run(open_all())
            seconds = time.monotonic() - started
            sessions = [r for r in results if not isinstance(r, BaseException)]
            try:
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    raise RuntimeError(f"{len(failures)} of {self.connections} IMAP sessions failed, "
                                       f"e.g. {failures[0]!r}")
                loaded = settled_memory(pids)
                if memory_kb(pids())["processes"] == 0:
                    raise RuntimeError("the server is gone")
            finally:
                runner.run(close_all(sessions))
        return loaded, seconds

    # -- WebSocket -----------------------------------------------------------------

    def _ours_websocket(self, root: Path, procs: Processes) -> dict:
        server = OpenMailserver(procs, root, DOMAIN, self.dns.address).start()
        try:
            keys = [server.create_mailbox(address.split("@")[0])["api_key"]["key"] for address in self.addresses()]
            tree = lambda: process_tree(server.pid)  # noqa: E731
            baseline = settled_memory(tree)
            loaded = self._hold_websockets(server, keys, tree)
        except Exception as exc:
            raise RuntimeError(f"openmailserver WebSocket: {exc}\n{server.log_tail()}") from exc
        finally:
            server.stop()
        return {
            "ws_mb": round(loaded["pss_kb"] / MB, 1),
            "ws_processes": loaded["processes"],
            "ws_baseline_mb": round(baseline["pss_kb"] / MB, 1),
            "ws_kb_per_connection": round((loaded["pss_kb"] - baseline["pss_kb"]) / self.connections, 1),
        }

    def _hold_websockets(self, server: OpenMailserver, keys: list[str], pids) -> dict:
        """Subscribe every client, read the settled memory (client loop idle), close them."""
        url = server.api_url.replace("http://", "ws://") + "/v1/ws"
        with asyncio.Runner() as runner:
            gate = asyncio.Semaphore(OPENING)

            async def one(n: int):
                async with gate:
                    socket = await websockets.connect(url, open_timeout=60, ping_interval=None, max_queue=None,
                                                      additional_headers={"X-OpenMailserver-Key": keys[n % len(keys)]})
                    try:
                        await socket.send(json.dumps({"type": "subscribe"}))
                        answer = json.loads(await asyncio.wait_for(socket.recv(), 60))
                        if answer.get("type") != "subscribed":
                            raise RuntimeError(f"subscribe answered {answer}")
                    except BaseException:
                        await socket.close()
                        raise
                    return socket

            async def open_all() -> list:
                return await asyncio.gather(*(one(n) for n in range(self.connections)), return_exceptions=True)

            async def close_all(sockets: list) -> None:
                await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)

            results = runner.run(open_all())
            sockets = [r for r in results if not isinstance(r, BaseException)]
            try:
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    raise RuntimeError(f"{len(failures)} of {self.connections} WebSocket subscriptions failed, "
                                       f"e.g. {failures[0]!r}")
                return settled_memory(pids)
            finally:
                runner.run(close_all(sockets))


def _imap_figures(loaded: dict, baseline: dict, seconds: float, connections: int) -> dict:
    return {
        "imap_mb": round(loaded["pss_kb"] / MB, 1),
        "imap_pss_mb": round(loaded["pss_kb"] / MB, 1),
        "imap_rss_sum_mb": round(loaded["rss_kb"] / MB, 1),
        "imap_processes": loaded["processes"],
        "imap_baseline_mb": round(baseline["pss_kb"] / MB, 1),
        "imap_kb_per_connection": round((loaded["pss_kb"] - baseline["pss_kb"]) / connections, 1),
        "imap_open_seconds": round(seconds, 1),
    }
