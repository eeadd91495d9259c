"""The OpenAPI document names exactly the routes the application serves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from starlette.routing import Route

from openmailserver.api.app import create_app
from openmailserver.api.openapi import OPERATIONS, document, render_markdown
from openmailserver.telemetry.metrics import Metrics


def test_every_route_is_documented_and_nothing_else():
    app = create_app(SimpleNamespace(metrics=Metrics(), worker=1))  # routes only; no request is served
    served = {(method.lower(), route.path) for route in app.routes if isinstance(route, Route)
              for method in route.methods or () if method != "HEAD"}
    documented = {(method, path) for method, path, *_ in OPERATIONS}
    assert served == documented


def test_document_is_well_formed():
    doc = document()
    assert doc["openapi"].startswith("3.1")
    for path, methods in doc["paths"].items():
        for op in methods.values():
            params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert params == {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert any(code.startswith("2") for code in op["responses"])


def test_api_reference_is_current():
    root = Path(__file__).resolve().parents[2]
    assert (root / "docs" / "api.md").read_text() == render_markdown(), \
        "docs/api.md is stale: run `openmailserver docs api > docs/api.md`"
