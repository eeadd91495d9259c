"""Domains: `/v1/domains` (native) and `/api/v0/domains` (agentmail dialect).

Adding a domain generates its DKIM key and answers with the records to
publish; `POST …/verify` checks them live through the daemon's resolver and
moves the domain to VERIFIED (event `domain.verified`); `GET …/zone` gives the
records as a BIND zone snippet. The logic is in `core.domains`.
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core import domains as core
from ..store import accounts
from . import compat
from .base import json_body, ok, principal, runtime


def native_json(settings, row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "domain": row["name"], "status": core.status(row).upper(),
            "feedback_enabled": bool(row.get("feedback_enabled", 1)), "dkim_selector": row["dkim_selector"],
            "records": [{k: r[k] for k in ("type", "name", "value", "priority", "status", "detail")}
                        for r in core.records(settings, row)],
            "verified_at": row.get("verified_at"), "checked_at": row.get("checked_at"),
            "created_at": row["created_at"], "updated_at": row.get("updated_at") or row["created_at"]}


def agentmail_json(settings, row: dict[str, Any]) -> dict[str, Any]:
    return {"domain_id": row["name"], "status": core.status(row).upper(),
            "feedback_enabled": bool(row.get("feedback_enabled", 1)),
            "records": [{k: r[k] for k in ("type", "name", "value", "status", "priority")}
                        for r in core.records(settings, row)],
            "created_at": row["created_at"], "updated_at": row.get("updated_at") or row["created_at"]}


Shape = Callable[[Any, dict[str, Any]], dict[str, Any]]


async def _create(request: Request, shape: Shape) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    body = await json_body(request)
    row = await rt.run(core.add, rt.db, body.get("domain"), body.get("feedback_enabled", True))
    return ok(shape(rt.settings, row), status=201)


async def _get(request: Request, shape: Shape) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    return ok(shape(rt.settings, await rt.run(core.get, rt.db, request.path_params["domain"])))


async def _verify(request: Request, shape: Shape) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    row, event = await rt.run(core.verify, rt.settings, rt.db, request.path_params["domain"])
    if event is not None:
        rt.hub.publish(event)
    return ok(shape(rt.settings, row))


async def _delete(request: Request) -> Response:
    await principal(request, "admin")
    rt = runtime(request)
    await rt.run(core.delete, rt.settings, rt.db, request.path_params["domain"])
    return Response(status_code=204)


async def zone(request: Request) -> Response:
    await principal(request, "admin")
    rt = runtime(request)
    row = await rt.run(core.get, rt.db, request.path_params["domain"])
    return Response(core.zone(rt.settings, row), media_type="text/plain; charset=utf-8")


# ---- native ------------------------------------------------------------------

async def create(request: Request) -> JSONResponse:
    return await _create(request, native_json)


async def list_domains(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    return ok([native_json(rt.settings, r) for r in await rt.adb.read(accounts.list_domains)])


async def get_domain(request: Request) -> JSONResponse:
    return await _get(request, native_json)


async def verify(request: Request) -> JSONResponse:
    return await _verify(request, native_json)


async def delete(request: Request) -> Response:
    return await _delete(request)


# ---- agentmail (/api/v0) -----------------------------------------------------

async def v0_create(request: Request) -> JSONResponse:
    return await _create(request, agentmail_json)


async def v0_list(request: Request) -> JSONResponse:
    await principal(request, "admin")
    page, size = compat.paging(request)
    rt = runtime(request)
    rows = await rt.adb.read(accounts.list_domains)
    data = [agentmail_json(rt.settings, r) for r in rows[(page - 1) * size: page * size]]
    return ok({"data": data, "total": len(rows), "page": page, "page_size": size})


async def v0_get(request: Request) -> JSONResponse:
    return await _get(request, agentmail_json)


async def v0_verify(request: Request) -> JSONResponse:
    return await _verify(request, agentmail_json)
