"""Building blocks of the OpenAPI document: schema constructors and common parameters."""

from __future__ import annotations

from typing import Any

S = dict[str, Any]


def nullable(kind: str) -> S:
    return {"type": [kind, "null"]}


def obj(required: list[str], **properties: S) -> S:
    return {"type": "object", "required": required, "properties": properties}


def ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def array(item: S) -> S:
    return {"type": "array", "items": item}


STRING, INTEGER, BOOLEAN, NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
ADDRESS_LIST: S = {"oneOf": [{"type": "string"}, array(STRING)]}
OBJECT: S = {"type": "object"}

XML = "application/xml"
ADDRESS = {"name": "address", "in": "path", "required": True, "schema": STRING}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "minLength": 1, "maxLength": 255}}


def path_param(name: str) -> S:
    return {"name": name, "in": "path", "required": True, "schema": STRING}


def query(name: str, schema: S = STRING) -> S:
    return {"name": name, "in": "query", "required": False, "schema": schema}
