"""Mailboxes, their passwords and API keys: `/v1/mailboxes`, `/v1/keys`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core import accounts as core
from ..errors import not_found
from ..store import accounts as store_accounts
from .base import json_body, ok, principal, runtime


def _key_payload(key: str, row: dict) -> dict:
    return {"id": row["id"], "key": key, "prefix": row["prefix"], "scopes": row["scopes"].split()}


async def create_mailbox(request: Request) -> JSONResponse:
    await principal(request, "admin")
    body = await json_body(request)
    rt = runtime(request)
    result = await rt.run(lambda: core.create_mailbox(
        rt.settings, rt.db, body.get("local_part"), body.get("domain"), password=body.get("password"),
        quota=body.get("quota"), display_name=body.get("display_name") or ""))
    mailbox = core.public_mailbox(result["mailbox"])
    return ok({"mailbox": mailbox, "password": result["password"],
               "api_key": _key_payload(result["api_key"], result["api_key_row"])}, status=201)


async def list_mailboxes(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    rows = await rt.adb.read(store_accounts.list_mailboxes)
    return ok([core.public_mailbox(r) for r in rows])


async def _own_mailbox(request: Request, scope: str = "mail:read") -> dict:
    """The mailbox named in the path, visible to the admin or its own key only (else 404)."""
    who = await principal(request, scope)
    rt = runtime(request)
    row = await rt.run(core.get_mailbox, rt.db, request.path_params["address"])
    if not who.is_admin and row["id"] != who.mailbox_id:
        raise not_found(f"mailbox {row['address']}")
    return row


async def get_mailbox(request: Request) -> JSONResponse:
    return ok(core.public_mailbox(await _own_mailbox(request)))


async def update_mailbox(request: Request) -> JSONResponse:
    await principal(request, "admin")
    body = await json_body(request)
    rt = runtime(request)
    row = await rt.run(lambda: core.update_mailbox(
        rt.db, request.path_params["address"], quota=body.get("quota"),
        display_name=body.get("display_name"), active=body.get("active")))
    return ok(core.public_mailbox(row))


async def delete_mailbox(request: Request) -> Response:
    await principal(request, "admin")
    rt = runtime(request)
    await rt.run(core.delete_mailbox, rt.settings, rt.db, request.path_params["address"])
    return Response(status_code=204)


async def set_password(request: Request) -> JSONResponse:
    row = await _own_mailbox(request)
    body = await json_body(request)
    rt = runtime(request)
    _, password = await rt.run(core.set_password, rt.db, row["address"], body.get("password"))
    return ok({"email": row["address"], "password": password})


async def create_key(request: Request) -> JSONResponse:
    row = await _own_mailbox(request)
    body = await json_body(request) if request.headers.get("content-length", "0") != "0" else {}
    name = body.get("name") if isinstance(body.get("name"), str) else ""
    rt = runtime(request)
    key, key_row = await rt.run(core.create_mailbox_key, rt.db, row["address"], name)
    return ok({**_key_payload(key, key_row), "mailbox": row["address"]}, status=201)


async def list_keys(request: Request) -> JSONResponse:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    rows = await rt.adb.read(store_accounts.list_keys, None if who.is_admin else who.mailbox_id)
    return ok([core.public_key(r) for r in rows])


async def revoke_key(request: Request) -> Response:
    who = await principal(request, "mail:read")
    rt = runtime(request)
    await rt.run(core.revoke_key, rt.settings, rt.db, request.path_params["key_id"],
                 None if who.is_admin else who.mailbox_id)
    return Response(status_code=204)

