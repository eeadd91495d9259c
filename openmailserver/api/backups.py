"""Backups (admin): `POST /v1/backup`, `GET /v1/backups`, `POST /v1/restore/validate`.

A restore replaces the data directory, so it is a CLI operation on a stopped
daemon (`openmailserver restore PATH`), never an HTTP call.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import ErrorCode, MailError
from ..ops import backup
from .base import json_body, ok, principal, runtime


async def create_backup(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    return ok(await rt.run(backup.create, rt.settings), status=201)


async def list_backups(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    return ok(await rt.run(backup.list_backups, rt.settings))


async def validate(request: Request) -> JSONResponse:
    await principal(request, "admin")
    rt = runtime(request)
    path = request.query_params.get("path")
    if path is None and request.headers.get("content-length", "0") != "0":
        path = (await json_body(request)).get("path")
    if not isinstance(path, str) or not path:
        raise MailError(ErrorCode.INVALID_REQUEST, "give the backup's path as ?path= or {\"path\": ...}")
    if "/" not in path:
        path = str(rt.settings.data_dir / "backups" / path)
    return ok(await rt.run(backup.validate, rt.settings, path))
