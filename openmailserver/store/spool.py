"""The outbound spool: one durable file per queued message under `data_dir/queue/`."""

from __future__ import annotations

from pathlib import Path

from .maildir import write_file_durably

SPOOL_DIR = "queue"


def spool_dir(data_dir: Path) -> Path:
    path = data_dir / SPOOL_DIR
    (path / "tmp").mkdir(parents=True, exist_ok=True)
    return path


def write(data_dir: Path, outbound_id: str, data: bytes) -> str:
    """Store the message durably; returns its path relative to `data_dir`."""
    directory = spool_dir(data_dir)
    write_file_durably(directory / "tmp" / f"{outbound_id}.eml", directory / f"{outbound_id}.eml", data)
    return f"{SPOOL_DIR}/{outbound_id}.eml"


def read(data_dir: Path, relative: str) -> bytes:
    return (data_dir / relative).read_bytes()


def remove(data_dir: Path, relative: str) -> None:
    (data_dir / relative).unlink(missing_ok=True)
