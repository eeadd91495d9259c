"""Dates (RFC 3501 §9 date, date-time): SEARCH dates, APPEND date-times and INTERNALDATE text."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from .errors import ParseError

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m.upper(): i for i, m in enumerate(_MONTHS, 1)}
_DATE_RE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# date-day-fixed = (SP DIGIT) / 2DIGIT; a bare single digit is tolerated too.
_DATETIME_RE = re.compile(
    r" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)


def _ascii_text(text: str | bytes, what: str) -> str:
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise ParseError(f"Invalid {what}") from None
    return text


def parse_imap_date(text: str | bytes) -> date:
    """Parse a SEARCH date ``d-Mon-yyyy`` (month case-insensitive)."""
    m = _DATE_RE.fullmatch(_ascii_text(text, "date"))
    month = _MONTH_NUMBER.get(m.group(2).upper()) if m else None
    if m is None or month is None:
        raise ParseError("Invalid date")
    try:
        return date(int(m.group(3)), month, int(m.group(1)))
    except ValueError:
        raise ParseError("Invalid date") from None


def parse_imap_datetime(text: str | bytes) -> datetime:
    """Parse an APPEND date-time ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` into an aware datetime."""
    m = _DATETIME_RE.fullmatch(_ascii_text(text, "date-time"))
    month = _MONTH_NUMBER.get(m.group(2).upper()) if m else None
    if m is None or month is None:
        raise ParseError("Invalid date-time")
    day, year, hour, minute, second, zh, zm = (int(m.group(i)) for i in (1, 3, 4, 5, 6, 8, 9))
    if zh > 23 or zm > 59:
        raise ParseError("Invalid date-time")
    offset = timedelta(hours=zh, minutes=zm)
    if m.group(7) == "-":
        offset = -offset
    try:
        # A leap second (":60") is clamped; datetime cannot represent it.
        second = 59 if second == 60 else second
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        raise ParseError("Invalid date-time") from None


def imap_date(value: datetime) -> str:
    """INTERNALDATE text, e.g. ``17-Jul-1996 02:44:25 -0700`` (naive = UTC).

    The day is zero-padded (``2DIGIT`` form of date-day-fixed).  Quote it
    with :func:`quote` when building a response.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    offset = value.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return (
        f"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{hh:02d}{mm:02d}"
    )
