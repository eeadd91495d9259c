"""Debug endpoints (`debug:read`): health in depth, config, message trace, deliverability, logs."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

from .. import tls
from ..dns import check as dnscheck
from ..errors import ErrorCode, MailError, not_found
from ..store import accounts, messages, queue
from ..telemetry.logs import LEVELS, LOG_FILE, read_entries
from .base import ok, principal, runtime
from .health import collect_checks


async def _debug_principal(request: Request):
    if not runtime(request).settings.debug_api_enabled:
        raise MailError(ErrorCode.NOT_FOUND, f"no endpoint at {request.url.path}",
                        fix="set debug_api_enabled = true to use the debug endpoints")
    return await principal(request, "debug:read")


async def debug_health(request: Request) -> JSONResponse:
    await _debug_principal(request)
    rt = runtime(request)
    checks, failed = await collect_checks(rt)
    checks["dns"] = await rt.run(dnscheck.resolver_answers)
    checks["certificate"] = tls.certificate_status(rt.settings.cert_path)
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
    suppressed = await rt.adb.read(messages.suppressed_copies, row["id"])
    return ok({"status": "delivered", "direction": row["direction"], "id": row["id"],
               "message_id": row["message_id"], "queue_id": None, "error": None,
               "events": [{"time": row["created_at"], "outcome": "delivered", "folder": row["folder"],
                           "envelope_from": row["envelope_from"], "authentication_results": row["auth_results"],
                           "spf": row["spf"], "dkim": row["dkim"], "dmarc": row["dmarc"]}]
               # Later copies of the same message that were acknowledged and not stored again.
               + [{"time": s["suppressed_at"], "outcome": "duplicate_suppressed", "queue_id": s["queue_id"],
                   "envelope_from": s["envelope_from"], "ip": s["peer_ip"]} for s in suppressed]})


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


async def logs(request: Request) -> JSONResponse:
    await _debug_principal(request)
    rt = runtime(request)
    level = request.query_params.get("level", "info").lower()
    limit = request.query_params.get("limit", "100")
    if level not in LEVELS:
        raise MailError(ErrorCode.INVALID_LEVEL, f"level must be one of {', '.join(LEVELS)}")
    if not limit.isdigit() or not 1 <= int(limit) <= 5000:
        raise MailError(ErrorCode.INVALID_LIMIT, "limit must be an integer from 1 to 5000")
    started = time.perf_counter()
    entries, _ = await rt.run(read_entries, rt.settings.log_dir / LOG_FILE, LEVELS[level], int(limit))
    return ok({"entries": entries, "count": len(entries),
               "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)})
