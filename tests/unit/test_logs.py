"""The log handlers: keys redacted on both, JSON lines in the file, rotation by size."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from openmailserver.auth.credentials import new_api_key
from openmailserver.telemetry import logs


class _Settings:
    log_level = "info"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir


def test_both_handlers_see_the_key_redacted_and_the_file_holds_json(tmp_path: Path) -> None:
    logs.setup_logging(_Settings(tmp_path), stderr=True)  # type: ignore[arg-type]
    root = logging.getLogger()
    try:
        console = next(h for h in root.handlers if not isinstance(h, logging.FileHandler))
        captured = io.StringIO()
        console.setStream(captured)
        key = new_api_key()
        logs.session_id.set("sess1")
        logging.getLogger("openmailserver.test").info("got %s from %s", key, "client")
        for handler in root.handlers:
            handler.flush()
        lines = (tmp_path / logs.LOG_FILE).read_text().splitlines()
        entry = json.loads(lines[-1])
        assert entry["session"] == "sess1" and entry["logger"] == "openmailserver.test"
        assert key not in entry["message"] and entry["message"].endswith("… from client")
        assert key not in captured.getvalue() and "[sess1] got " in captured.getvalue()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()


def test_the_file_rolls_over_at_its_size_limit(tmp_path: Path) -> None:
    handler = logs._FileHandler(tmp_path / "x.log", maxBytes=2000, backupCount=2, encoding="utf-8")
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("openmailserver.rotation-test")
    log.addHandler(handler)
    log.propagate = False
    try:
        for n in range(100):
            log.warning("line %03d %s", n, "x" * 40)
    finally:
        log.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["x.log", "x.log.1", "x.log.2"]
    longest = max(len(line) + 1 for p in tmp_path.iterdir() for line in p.read_text().splitlines())
    for name in files:
        assert (tmp_path / name).stat().st_size < 2000 + longest
    assert "line 099" in (tmp_path / "x.log").read_text()
