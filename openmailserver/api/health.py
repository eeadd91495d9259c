"""`GET /health`: real checks of the database, the disk, every listener and the TLS certificate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import __version__, tls
from ..store import accounts, queue
from ..util import disk_status
from .base import runtime


async def _check_database(rt) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        domains = await asyncio.wait_for(rt.adb.read(accounts.list_domains), timeout=3)
    except Exception as exc:  # any failure is a failed check, reported, not raised
        return {"status": "fail", "error": str(exc)}
    return {"status": "ok", "domains": len(domains),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def _check_listener(host: str, port: int) -> dict[str, Any]:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(target, port), timeout=2)
    except (OSError, asyncio.TimeoutError) as exc:
        return {"status": "fail", "address": f"{host}:{port}", "error": str(exc) or type(exc).__name__}
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return {"status": "ok", "address": f"{host}:{port}"}


def workers_status(rt) -> dict[str, Any]:
    """Every worker process of the daemon, whichever of them answers: "warn" while one is
    down or restarting (the others serve meanwhile)."""
    workers = rt.board.workers_status()
    serving = sum(1 for w in workers if w["alive"] and w["serving"])
    return {"status": "ok" if serving == len(workers) else "warn", "count": len(workers), "serving": serving,
            "answered_by": rt.worker, "workers": workers}


async def collect_checks(rt) -> tuple[dict[str, Any], bool]:
    """The database, disk and listener checks, and whether any failed."""
    names = list(rt.listeners)
    database, (depth, oldest), *listener_checks = await asyncio.gather(
        _check_database(rt), rt.adb.read(queue.queue_depth), *(_check_listener(*rt.listeners[n]) for n in names))
    checks = {
        "database": database,
        "disk": disk_status(rt.settings.data_dir),
        "listeners": dict(zip(names, listener_checks)),
        "workers": workers_status(rt),
        "queue": {"status": "ok", "depth": depth, "oldest_created_at": oldest},
    }
    failed = database["status"] != "ok" or checks["disk"]["status"] != "ok" or any(
        c["status"] != "ok" for c in listener_checks)
    return checks, failed


async def health(request: Request) -> JSONResponse:
    rt = runtime(request)
    checks, failed = await collect_checks(rt)
    # "warn" 14 days before the certificate expires; "fail" once it has (or is unreadable).
    checks["certificate"] = tls.certificate_status(rt.settings.cert_path)
    failed = failed or checks["certificate"]["status"] == "fail"
    body = {"status": "fail" if failed else "ok", "version": __version__,
            "uptime_seconds": round(time.time() - rt.started_at, 1), **checks}
    return JSONResponse(body, status_code=503 if failed else 200)
