"""Debug endpoints (`debug:read`): health in depth, config, message trace, deliverability, logs."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import dnscheck, tls
from ..errors import MailError, not_found
from ..logs import LOG_FILE
from ..store import accounts, messages, queue
from .base import ok, principal, runtime
from .health import collect_checks

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
CERT_WARN_DAYS = 14


async def _debug_principal(request: Request):
    if not runtime(request).settings.debug_api_enabled:
        raise MailError("not_found", f"no endpoint at {request.url.path}", http_status=404,
                        fix="set debug_api_enabled = true to use the debug endpoints")
    return await principal(request, "debug:read")


def _certificate(rt) -> dict:
    try:
        expires = tls.certificate_expiry(rt.settings.cert_path)
    except (OSError, ValueError) as exc:
        return {"status": "fail", "error": str(exc)}
    days = (expires - datetime.now(timezone.utc)).total_seconds() / 86400
    status = "fail" if days <= 0 else "warn" if days < CERT_WARN_DAYS else "ok"
    return {"status": status, "expires_at": expires.isoformat().replace("+00:00", "Z"), "days_left": int(days)}


async def debug_health(request: Request) -> JSONResponse:
    await _debug_principal(request)
    rt = runtime(request)
    checks, failed = await collect_checks(rt)
    depth, oldest = await rt.adb.read(queue.queue_depth)
    checks["queue"] = {"status": "ok", "depth": depth, "oldest_created_at": oldest}
    checks["dns"] = await rt.run(dnscheck.resolver_answers)
    checks["certificate"] = _certificate(rt)
    failed = failed or checks["dns"]["status"] == "fail" or checks["certificate"]["status"] == "fail"
    return JSONResponse({"status": "fail" if failed else "ok", **checks}, status_code=503 if failed else 200)


async def debug_config(request: Request) -> JSONResponse:
    await _debug_principal(request)
    return ok(runtime(request).settings.redacted())


async def trace(request: Request) -> JSONResponse:
    """Where a message went: every delivery attempt for outbound mail, the checks for inbound."""
    who = await _debug_principal(request)
    rt = runtime(request)
    ident = request.path_params["message_id"]
    outbound = await rt.adb.read(queue.find_outbound, ident)
    if outbound is not None and (who.is_admin or outbound["mailbox_id"] == who.mailbox_id):
        attempts = await rt.adb.read(queue.attempts, outbound["id"])
        return ok({"status": outbound["state"], "direction": "outbound", "id": outbound["id"],
                   "message_id": outbound["message_id"], "queue_id": outbound["queue_id"],
                   "error": outbound["error"], "recipients": outbound["recipients"],
                   "events": [{"time": a["attempted_at"], "recipient": a["recipient"], "outcome": a["outcome"],
                               "mx": a["mx_host"], "ip": a["ip"], "tls": a["tls"], "code": a["code"],
                               "response": a["response"]} for a in attempts]})
    row = await rt.adb.read(messages.get_message, ident)
    if row is None or not (who.is_admin or row["mailbox_id"] == who.mailbox_id):
        raise not_found("message")
    return ok({"status": "delivered", "direction": row["direction"], "id": row["id"],
               "message_id": row["message_id"], "queue_id": None, "error": None,
               "events": [{"time": row["created_at"], "outcome": "delivered", "folder": row["folder"],
                           "envelope_from": row["envelope_from"], "authentication_results": row["auth_results"],
                           "spf": row["spf"], "dkim": row["dkim"], "dmarc": row["dmarc"]}]})


async def deliverability(request: Request) -> JSONResponse:
    await _debug_principal(request)
    rt = runtime(request)
    domains = await rt.adb.read(accounts.list_domains)
    results = await asyncio.gather(*(rt.run(dnscheck.check_domain, rt.settings, d) for d in domains))
    report = []
    for domain, checks in zip(domains, results):
        statuses = {c.status for c in checks}
        report.append({"domain": domain["name"], "status": "fail" if "fail" in statuses else
                       "warn" if "warn" in statuses else "pass", "checks": [c.as_dict() for c in checks]})
    return ok({"hostname": rt.settings.mail_host, "generated_at": datetime.now(timezone.utc).isoformat()
               .replace("+00:00", "Z"), "domains": report})


def _tail(path, limit: int, level: int) -> list[dict]:
    lines: deque[dict] = deque(maxlen=limit)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if LEVELS.get(entry.get("level", "info"), 20) >= level:
                    lines.append(entry)
    except FileNotFoundError:
        return []
    return list(lines)


async def logs(request: Request) -> JSONResponse:
    await _debug_principal(request)
    rt = runtime(request)
    level = request.query_params.get("level", "info").lower()
    limit = request.query_params.get("limit", "100")
    if level not in LEVELS:
        raise MailError("invalid_level", f"level must be one of {', '.join(LEVELS)}", http_status=422)
    if not limit.isdigit() or not 1 <= int(limit) <= 5000:
        raise MailError("invalid_limit", "limit must be an integer from 1 to 5000", http_status=422)
    started = time.perf_counter()
    entries = await rt.run(_tail, rt.settings.log_dir / LOG_FILE, int(limit), LEVELS[level])
    return ok({"entries": entries, "count": len(entries),
               "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)})
