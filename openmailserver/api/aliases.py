"""Aliases: `/v1/aliases` (admin)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core import accounts as core
from ..store import accounts as store_accounts
from .base import json_body, ok, principal, runtime


def _public(row: dict) -> dict:
    return {"id": row["id"], "source": row["source"], "destination": row["destination"],
            "created_at": row["created_at"]}


async def create_alias(request: Request) -> JSONResponse:
    await principal(request, "admin")
    body = await json_body(request)
    rt = runtime(request)
    row = await rt.run(core.create_alias, rt.db, body.get("source"), body.get("destination"))
    return ok(_public(row), status=201)


async def list_aliases(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rows = await runtime(request).adb.read(store_accounts.list_aliases)
    return ok([_public(r) for r in rows])


async def delete_alias(request: Request) -> Response:
    await principal(request, "admin")
    rt = runtime(request)
    await rt.run(core.delete_alias, rt.db, request.path_params["source"])
    return Response(status_code=204)
