"""The layers of docs/architecture.md hold: import-linter checks the contracts in pyproject.toml."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"})


def test_the_contracts_are_kept() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", result.stdout), result.stdout


def test_an_import_against_the_layers_breaks_a_contract(tmp_path: Path) -> None:
    """The check can fail: a copy of the package where the IMAP parser imports the store."""
    shutil.copytree(ROOT / "openmailserver", tmp_path / "openmailserver", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    tokens = tmp_path / "openmailserver" / "imap" / "protocol" / "tokens.py"
    tokens.write_text(tokens.read_text() + "\nfrom ...store import db  # noqa: E402\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "openmailserver.imap.protocol is not allowed to import openmailserver.store" in result.stdout, result.stdout
