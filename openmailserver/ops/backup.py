"""Consistent, encrypted, streamed backups and their validation and restore.

A backup is a tar stream — the SQLite database taken with the online backup
API, then the Maildir tree, the TLS files and a `manifest.json` of SHA-256
checksums — encrypted as it is written, so no archive is ever whole in memory.

Encryption: a key derived from `backup_encryption_key` with scrypt, then the
stream cut into 1 MiB chunks, each sealed with AES-256-GCM. A chunk's nonce
is a random per-file prefix plus its index, and its associated data says
whether it is the last one, so a reordered, truncated or extended file fails
to open (the STREAM construction of Hoang, Reyhanitabar, Rogaway, Vizár).

Files written after the database snapshot are adopted, and rows whose file
has gone are dropped, by the start-up reconciliation after a restore.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import struct
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..config import Settings
from ..errors import ErrorCode, MailError

MAGIC = b"OMSBACKUP1\n"
CHUNK = 1024 * 1024
SALT_BYTES, PREFIX_BYTES = 16, 7
MANIFEST = "manifest.json"
DB_MEMBER = "db/openmailserver.db"
TOP_LEVEL = ("db", "mail", "tls", MANIFEST)


Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class BackupError(Exception):
    """The backup cannot be read: the message says why."""


def _key(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode("utf-8"))


def _nonce(prefix: bytes, index: int, last: bool) -> tuple[bytes, bytes]:
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00"), b"last" if last else b"more"


class _EncryptingWriter(io.RawIOBase):
    """A write-only stream that seals every CHUNK bytes into the target file."""

    def __init__(self, target: IO[bytes], passphrase: str) -> None:
        salt, self._prefix = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(PREFIX_BYTES)
        self._aead = AESGCM(_key(passphrase, salt))
        self._target = target
        self._buffer = bytearray()
        self._index = 0
        target.write(MAGIC + salt + self._prefix)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) > CHUNK:
            self._seal(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _seal(self, plain: bytes, last: bool) -> None:
        nonce, aad = _nonce(self._prefix, self._index, last)
        sealed = self._aead.encrypt(nonce, plain, aad)
        self._target.write(struct.pack(">I", len(sealed)) + sealed)
        self._index += 1

    def finish(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()


def _decrypted_chunks(source: IO[bytes], passphrase: str, progress: Progress | None = None) -> Iterator[bytes]:
    total = os.fstat(source.fileno()).st_size
    header = source.read(len(MAGIC) + SALT_BYTES + PREFIX_BYTES)
    if not header.startswith(MAGIC) or len(header) != len(MAGIC) + SALT_BYTES + PREFIX_BYTES:
        raise BackupError("not an openmailserver backup (bad header)")
    salt = header[len(MAGIC):len(MAGIC) + SALT_BYTES]
    prefix = header[len(MAGIC) + SALT_BYTES:]
    aead = AESGCM(_key(passphrase, salt))
    index = 0
    while True:
        size_bytes = source.read(4)
        if len(size_bytes) != 4:
            raise BackupError("the backup is truncated (its last chunk is missing)")
        (size,) = struct.unpack(">I", size_bytes)
        if size > CHUNK + 16:
            raise BackupError(f"chunk {index} has an impossible size: the file is corrupted")
        sealed = source.read(size)
        if len(sealed) != size:
            raise BackupError(f"the backup is truncated inside chunk {index}")
        if progress:
            progress(source.tell(), total)
        for last in (False, True):
            nonce, aad = _nonce(prefix, index, last)
            try:
                plain = aead.decrypt(nonce, sealed, aad)
            except InvalidTag:
                continue
            yield plain
            if last:
                if source.read(1):
                    raise BackupError("data follows the last chunk: the file was tampered with")
                return
            break
        else:
            if index == 0:
                raise BackupError("cannot decrypt: wrong backup_encryption_key, or the file is corrupted")
            raise BackupError(f"chunk {index} fails authentication: the file is corrupted")
        index += 1


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _passphrase(settings: Settings) -> str:
    if not settings.backup_encryption_key:
        raise MailError(ErrorCode.BACKUP_KEY_MISSING, "backups need the backup_encryption_key setting",
                        fix="set backup_encryption_key (for example OPENMAILSERVER_BACKUP_ENCRYPTION_KEY)")
    return settings.backup_encryption_key


class _HashingReader(io.RawIOBase):
    """Reads a file while hashing what passes through."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[override]
        n = self._fh.readinto(target)
        self.digest.update(memoryview(target)[:n])
        return n


def _renamed(path: Path) -> Path | None:
    """Where a Maildir file went when its flags changed (or it moved new/ -> cur/) meanwhile."""
    base = path.name.split(":2,", 1)[0]
    for directory in (path.parent, path.parent.parent / "cur"):
        if directory.is_dir():
            for candidate in directory.iterdir():
                if candidate.name.split(":2,", 1)[0] == base:
                    return candidate
    return None


def _add_file(archive: tarfile.TarFile, path: Path, name: str, manifest: dict[str, Any],
              data_dir: Path | None = None) -> None:
    if not path.exists() and data_dir is not None:
        moved = _renamed(path)
        if moved is None:
            return  # deleted meanwhile: the restored index drops its row at start-up
        path, name = moved, moved.relative_to(data_dir).as_posix()
    try:
        with open(path, "rb") as fh:
            info = archive.gettarinfo(fileobj=fh, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            reader = _HashingReader(fh)
            archive.addfile(info, io.BufferedReader(reader))
    except FileNotFoundError:  # deleted or renamed while we walked: reconcile sorts it out
        return
    manifest["files"][name] = {"sha256": reader.digest.hexdigest(), "size": info.size}


def _files_to_back_up(settings: Settings) -> list[tuple[Path, str, int]]:
    """(path, name in the archive, size) of every Maildir and TLS file, in a stable order."""
    found = []
    for root_name in ("mail", "tls"):
        for dirpath, dirnames, filenames in os.walk(settings.data_dir / root_name):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(settings.data_dir)
            if rel_dir.name == "tmp":  # unfinished deliveries are never part of a backup
                continue
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    size = 0  # renamed or deleted meanwhile: _add_file looks for it
                found.append((path, f"{rel_dir.as_posix()}/{filename}", size))
    return found


def create(settings: Settings, progress: Progress | None = None) -> dict[str, Any]:
    """Write a backup into `data_dir/backups/`; safe while the daemon runs.

    `progress(done, total)` is called with bytes archived so far, for a progress bar.
    """
    passphrase = _passphrase(settings)
    stamp = datetime.now(timezone.utc)
    directory = settings.data_dir / "backups"
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"openmailserver-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}.omsbackup"
    partial = final.with_suffix(".partial")
    manifest: dict[str, Any] = {"format": 1, "created_at": stamp.isoformat().replace("+00:00", "Z"),
                                "hostname": settings.mail_host, "files": {}}
    with tempfile.TemporaryDirectory(dir=settings.data_dir) as scratch:
        snapshot = Path(scratch) / "snapshot.db"
        source = sqlite3.connect(settings.db_path)
        target = sqlite3.connect(snapshot)
        try:
            source.backup(target)  # SQLite online backup: a consistent copy while writers continue
        finally:
            target.close()
            source.close()
        files = _files_to_back_up(settings)
        total = snapshot.stat().st_size + sum(size for _, _, size in files)
        with open(partial, "wb") as out:
            writer = _EncryptingWriter(out, passphrase)
            buffered = io.BufferedWriter(writer, buffer_size=CHUNK)
            with tarfile.open(fileobj=buffered, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                _add_file(archive, snapshot, DB_MEMBER, manifest)
                done = snapshot.stat().st_size
                for path, name, size in files:
                    _add_file(archive, path, name, manifest, settings.data_dir)
                    done += size
                    if progress:
                        progress(done, total)
                data = json.dumps(manifest, indent=1).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            buffered.flush()
            writer.finish()
            out.flush()
            os.fsync(out.fileno())
    os.rename(partial, final)
    return {"path": str(final), "encrypted": True, "size": final.stat().st_size,
            "files": len(manifest["files"]), "created_at": manifest["created_at"]}


def _safe_member(member: tarfile.TarInfo) -> str | None:
    """Why a member may not be extracted, or None when it is safe (RFC-free common sense)."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] not in TOP_LEVEL:
        return f"unsafe path {member.name!r}"
    if not (member.isfile() or member.isdir()):
        return f"{member.name!r} is not a regular file"
    return None


def _walk(path: Path, passphrase: str, extract_to: Path | None, progress: Progress | None = None) -> dict[str, Any]:
    """Decrypt, check every member against the manifest, optionally extract. Raises BackupError."""
    seen: dict[str, str] = {}
    manifest = None
    with open(path, "rb") as source:
        reader = io.BufferedReader(_ChunkReader(_decrypted_chunks(source, passphrase, progress)), buffer_size=CHUNK)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as archive:
                for member in archive:
                    problem = _safe_member(member)
                    if problem:
                        raise BackupError(problem)
                    if member.isdir():
                        continue
                    handle = archive.extractfile(member)
                    digest = hashlib.sha256()
                    out = None
                    if extract_to is not None and member.name != MANIFEST:
                        target = extract_to / member.name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        out = open(target, "wb")
                    try:
                        body = b"" if member.name == MANIFEST else None
                        while chunk := handle.read(CHUNK):
                            digest.update(chunk)
                            if out is not None:
                                out.write(chunk)
                            if body is not None:
                                body += chunk
                    finally:
                        if out is not None:
                            out.close()
                    if member.name == MANIFEST:
                        manifest = json.loads(body or b"{}")
                    else:
                        seen[member.name] = digest.hexdigest()
        except tarfile.TarError as exc:
            raise BackupError(f"the archive inside is damaged: {exc}") from None
    if manifest is None:
        raise BackupError("the backup has no manifest")
    expected = {name: meta["sha256"] for name, meta in manifest.get("files", {}).items()}
    if DB_MEMBER not in expected:
        raise BackupError("the backup holds no database")
    missing = sorted(set(expected) - set(seen))
    extra = sorted(set(seen) - set(expected))
    wrong = sorted(n for n in expected.keys() & seen.keys() if expected[n] != seen[n])
    if missing or extra or wrong:
        raise BackupError(f"checksums do not match the manifest: {len(missing)} missing, {len(extra)} unlisted, "
                          f"{len(wrong)} altered" + (f" (e.g. {(missing + extra + wrong)[0]})"))
    return {"files": len(seen), "created_at": manifest.get("created_at"), "hostname": manifest.get("hostname")}


def validate(settings: Settings, path: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """`{"status": "ok"|"invalid", "details": {...}}` — never raises for a bad file."""
    passphrase = _passphrase(settings)
    target = Path(path)
    if not target.is_file():
        return {"status": "invalid", "details": {"reason": f"{target} is not a file"}}
    try:
        details = _walk(target, passphrase, None, progress)
    except BackupError as exc:
        return {"status": "invalid", "details": {"reason": str(exc)}}
    return {"status": "ok", "details": {**details, "path": str(target), "size": target.stat().st_size}}


def restore(settings: Settings, path: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Restore into `data_dir`, which must be empty or hold no database (the daemon is stopped)."""
    passphrase = _passphrase(settings)
    data_dir = settings.data_dir
    if settings.db_path.exists():
        raise MailError(ErrorCode.DATA_DIR_NOT_EMPTY, f"{data_dir} already holds a database",
                        fix="restore into a new data_dir, or move the old one away first")
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as scratch:
        staging = Path(scratch)
        try:
            details = _walk(Path(path), passphrase, staging, progress)
        except BackupError as exc:
            raise MailError(ErrorCode.INVALID_BACKUP, str(exc)) from None
        for name in ("mail", "tls"):
            if (staging / name).exists():
                if (data_dir / name).exists():
                    shutil.rmtree(data_dir / name)
                os.rename(staging / name, data_dir / name)
        os.rename(staging / DB_MEMBER, settings.db_path)
    return {"status": "restored", "data_dir": str(data_dir), **details}


def list_backups(settings: Settings) -> list[dict[str, Any]]:
    directory = settings.data_dir / "backups"
    if not directory.is_dir():
        return []
    out = []
    for entry in sorted(directory.glob("*.omsbackup"), reverse=True):
        stat = entry.stat()
        out.append({"path": str(entry), "name": entry.name, "size": stat.st_size,
                    "created_at": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()
                    .replace("+00:00", "Z")})
    return out
