"""A reproducible corpus of mail for the IMAP benchmarks, and loading it into a Maildir.

Messages are about 4 KB: plain text, one in five multipart/alternative (text
and HTML), one in ten multipart/mixed with a small PDF-like attachment; CRLF
line ends, as both servers store mail. Every file is named like a Maildir
delivery and dated (its modification time is the INTERNALDATE) over the
preceding 90 days. One in ten subjects contains SEARCH_WORD, so a header
SEARCH has a known answer.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import textwrap
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEARCH_WORD = "invoice"
WORDS = ("meeting agenda quarterly report project budget review schedule travel lunch update draft release "
         "customer order shipping weekend notes minutes proposal contract design server backup patch deploy "
         "question answer summary figures team planning roadmap feedback support ticket").split()
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar")
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _paragraphs(rng: random.Random, size: int) -> str:
    out: list[str] = []
    total = 0
    while total < size:
        paragraph = textwrap.fill(" ".join(_sentence(rng, rng.randint(6, 14)) for _ in range(rng.randint(2, 5))),
                                  72)
        out.append(paragraph)
        total += len(paragraph) + paragraph.count("\n") + 2
    return "\n\n".join(out)


def _date(n: int) -> datetime:
    return EPOCH - timedelta(seconds=(n * 7919) % (90 * 86400))


def message(n: int, recipient: str, size: int = 4096, seed: int = 1) -> bytes:
    """Message number n (the same for the same seed) to `recipient`, about `size` bytes."""
    rng = random.Random(seed * 1_000_003 + n)
    sender = rng.choice(PEOPLE)
    subject = _sentence(rng, rng.randint(3, 7)).rstrip(".")
    if n % 10 == 3:
        subject = f"{SEARCH_WORD.capitalize()} {n} for {subject.lower()}"
    head = [f"From: {sender.capitalize()} Example <{sender}@example.org>", f"To: {recipient}"]
    if n % 4 == 0:
        head.append(f"Cc: {rng.choice(PEOPLE)}@example.net")
    head += [f"Subject: {subject}", f"Date: {format_datetime(_date(n))}", f"Message-ID: <bench{n}.{seed}@example.org>"]
    if n % 3 == 1:
        head.append(f"In-Reply-To: <bench{n - 1}.{seed}@example.org>")
    head.append("MIME-Version: 1.0")
    text_type = 'Content-Type: text/plain; charset="us-ascii"\nContent-Transfer-Encoding: 7bit'
    room = size - sum(len(line) + 2 for line in head)
    boundary = f"=_bench_{seed}_{n}"
    if n % 10 == 5:
        attachment = base64.encodebytes(rng.randbytes(1024)).decode()
        body = "\n".join([
            "This is a multipart message in MIME format.", "", f"--{boundary}", text_type, "",
            _paragraphs(rng, max(200, room - len(attachment) - 500)), "", f"--{boundary}",
            f'Content-Type: application/pdf; name="document-{n}.pdf"', "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="document-{n}.pdf"', "", attachment.rstrip("\n"),
            f"--{boundary}--", ""])
        head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    elif n % 5 == 0:
        text = _paragraphs(rng, max(200, (room - 450) // 2))
        html = "\n".join(f"<p>{paragraph}</p>" for paragraph in text.split("\n\n"))
        body = "\n".join([
            "This is a multipart message in MIME format.", "", f"--{boundary}", text_type, "", text, "",
            f"--{boundary}", 'Content-Type: text/html; charset="us-ascii"', "Content-Transfer-Encoding: 7bit", "",
            f"<html><body>\n{html}\n</body></html>", f"--{boundary}--", ""])
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    else:
        body = _paragraphs(rng, max(200, room - 100)) + "\n"
        head += text_type.split("\n")
    return ("\r\n".join(head) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("ascii")


def file_name(n: int) -> str:
    return f"{int(EPOCH.timestamp()) - n}.M{n}P1.bench"


def write_corpus(directory: Path, count: int, recipient: str, size: int = 4096) -> int:
    """Write `count` messages into directory as Maildir-named files; returns the total bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    for n in range(count):
        data = message(n, recipient, size)
        path = directory / file_name(n)
        path.write_bytes(data)
        stamp = _date(n).timestamp()
        os.utime(path, (stamp, stamp))
        total += len(data)
    return total


def copy_into_maildir(corpus: Path, maildir: Path, owner: tuple[int, int] | None = None) -> int:
    """Copy every corpus file into maildir/new, keeping modification times (the INTERNALDATE
    of a Maildir message) and setting the owner when given; returns the number of files."""
    target = maildir / "new"
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for entry in os.scandir(corpus):
        destination = target / entry.name
        shutil.copy2(entry.path, destination)
        if owner is not None:
            os.chown(destination, *owner)
        count += 1
    return count
