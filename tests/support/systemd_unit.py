"""Read a systemd unit file the way systemd does, for the tests that run what the unit runs.

Only the standard library: `unit_sandbox.py` imports this under Debian's
/usr/bin/python3 as well as the test venv's Python.
"""

from __future__ import annotations

import shlex
from pathlib import Path

# ExecStart= prefixes (systemd.service(5) "Command lines"); none change the argv itself.
EXEC_PREFIXES = "@-:+!"


def parse(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value in order. An empty assignment resets the key, as in systemd."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in Path(path).read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{path}: not a unit file line: {raw!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if value == "":
            current[key] = []
        else:
            current.setdefault(key, []).append(value)
    return sections


def service(path: str | Path) -> dict[str, list[str]]:
    return parse(path).get("Service", {})


def last(values: dict[str, list[str]], key: str, default: str | None = None) -> str | None:
    found = values.get(key)
    return found[-1] if found else default


def exec_argv(line: str) -> list[str]:
    """An ExecStart= line as argv (prefixes dropped)."""
    line = line.lstrip()
    while line and line[0] in EXEC_PREFIXES:
        line = line[1:]
    return shlex.split(line)


def environment(values: list[str]) -> dict[str, str]:
    """Environment= lines: space-separated, optionally quoted VAR=value assignments."""
    env: dict[str, str] = {}
    for line in values:
        for item in shlex.split(line):
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"Environment= item without '=': {item!r}")
            env[name] = value
    return env


def words(values: dict[str, list[str]], key: str) -> list[str]:
    """A space-separated list setting, every assignment joined."""
    return [word for value in values.get(key, []) for word in value.split()]


def boolean(values: dict[str, list[str]], key: str) -> bool:
    return (last(values, key) or "no").lower() in ("1", "yes", "true", "on")
