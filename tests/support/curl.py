"""Run a documentation `curl` example against a test daemon with real curl."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any


def run_curl(command: str, replacements: dict[str, str], env: dict[str, str] | None = None,
             cwd: str | None = None) -> tuple[int, Any]:
    """The example with its placeholders replaced (base URL, key, ids), run by bash; returns
    (HTTP status, parsed JSON body or None for an empty body)."""
    for old, new in replacements.items():
        command = command.replace(old, new)
    assert "https://" not in command, f"an address outside the test is left in: {command}"
    result = subprocess.run(["bash", "-c", command.rstrip() + " -sS -w '\\n%{http_code}'"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **(env or {})}, cwd=cwd)
    assert result.returncode == 0, f"curl failed: {result.stderr}\n{command}"
    body, _, status = result.stdout.rpartition("\n")
    return int(status), (json.loads(body) if body.strip() else None)
