"""Shared pieces of the API: auth, JSON bodies, JSON responses and errors."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from ..core.accounts import Principal, authenticate
from ..errors import ErrorCode, MailError
from ..runtime import Runtime

MAX_JSON_BODY = 1024 * 1024


def runtime(request: HTTPConnection) -> Runtime:
    return request.app.state.runtime


def api_key_of(request: HTTPConnection, allow_query: bool = False) -> str | None:
    key = request.headers.get("x-openmailserver-key")
    if key:
        return key.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query:  # browsers cannot set headers on EventSource/WebSocket
        return request.query_params.get("key") or None
    return None


async def principal(request: HTTPConnection, scope: str, allow_query: bool = False) -> Principal:
    """The caller, who must hold `scope`: 401 without a key, 403 for a wrong key or scope."""
    key = api_key_of(request, allow_query)
    if not key:
        raise MailError(ErrorCode.UNAUTHORIZED, "an API key is required",
                        fix="send it in the X-OpenMailserver-Key header or as Authorization: Bearer")
    if len(key) > 256:
        raise MailError(ErrorCode.FORBIDDEN, "invalid API key")
    rt = runtime(request)
    who = await rt.run(authenticate, rt.db, key)
    if who is None:
        raise MailError(ErrorCode.FORBIDDEN, "invalid API key")
    if not who.allows(scope):
        raise MailError(ErrorCode.FORBIDDEN, f"this key lacks the {scope!r} scope")
    request.state.principal = who
    return who


async def json_body(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object (whatever the Content-Type says), or a 400/413 error."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise MailError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise MailError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MailError(ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MailError(ErrorCode.INVALID_JSON, "the body must be a JSON object")
    return data


def ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def error_response(exc: MailError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return JSONResponse(exc.as_json(), status_code=exc.http_status, headers=headers)
