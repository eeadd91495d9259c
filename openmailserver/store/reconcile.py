"""Start-up reconciliation of the Maildir tree and the index (docs/architecture.md, "Invariants").

Runs before any listener accepts connections, so nothing writes meanwhile:
leftovers in `tmp/` are removed, as are files cut short by a power loss before
their fsync (size not the `S=` of their name; never acknowledged), files that
other tools dropped into `new/` or `cur/` (or that a crash left unindexed) are
adopted with fresh UIDs, rows whose file is gone are dropped, and rows whose file was renamed (flags changed by
another tool, `new/` -> `cur/`) follow the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import mime
from . import maildir
from .db import Database
from .messages import all_folders, drop_message_rows, folder_files, record_message, set_filename


@dataclass
class ReconcileReport:
    tmp_removed: int = 0
    incomplete_removed: int = 0
    adopted: int = 0
    dropped: int = 0
    renamed: int = 0


def _flags_from_name(filename: str) -> str:
    _, sep, info = filename.partition(":2,")
    if not sep:
        return ""
    letters = {v: k for k, v in maildir.FLAG_LETTERS.items()}
    return " ".join(sorted(letters[c] for c in info if c in letters))


def reconcile(db: Database, mail_root: Path) -> ReconcileReport:
    report = ReconcileReport()
    for folder in db.read(all_folders):
        root = maildir.mailbox_root(mail_root, folder["domain"], folder["local_part"])
        path = maildir.ensure_folder(root, folder["name"])
        report.tmp_removed += maildir.clean_tmp(path)
        on_disk = maildir.list_files(path)
        for base, filename in list(on_disk.items()):
            if maildir.incomplete(path / filename):
                maildir.remove_file(path, filename)
                del on_disk[base]
                report.incomplete_removed += 1
        rows = db.read(folder_files, folder["id"])
        known = {maildir.base_name(r["filename"]): r for r in rows}
        gone = [r["id"] for base, r in known.items() if base not in on_disk]
        if gone:
            db.write(drop_message_rows, gone)
            report.dropped += len(gone)
        for base, row in known.items():
            current = on_disk.get(base)
            if current and current != row["filename"]:
                db.write(set_filename, row["id"], current)
                report.renamed += 1
        for base, filename in sorted(on_disk.items()):
            if base in known:
                continue
            raw = (path / filename).read_bytes()
            db.write(record_message, mailbox_id=folder["mailbox_id"], folder=folder["name"],
                     filename=filename, size=len(raw), meta=mime.index_meta(raw),
                     flags=_flags_from_name(filename))
            report.adopted += 1
    return report
