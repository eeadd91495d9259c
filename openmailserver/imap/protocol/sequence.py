"""Sequence sets (RFC 3501 §9 sequence-set): parsing, resolving ``*``, and the compact form of UIDPLUS."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import ParseError
from .syntax import MAX_NUMBER


@dataclass(frozen=True)
class SequenceSet:
    """A parsed sequence-set such as ``1,3:5,7:*``.

    ``ranges`` holds ``(start, end)`` pairs as written (``5:3`` stays
    reversed); ``None`` stands for ``*``.  ``*`` means the largest number in
    use: the message count for sequence numbers, the highest UID in the
    mailbox for UID sets (RFC 3501 §6.4.8, §9).  Every method that resolves
    ``*`` therefore takes ``largest``.

    Empty mailbox (``largest == 0``): an element involving ``*`` matches
    nothing, so ``*`` and ``1:*`` resolve to the empty set, and explicit
    numbers are outside the mailbox.  Results are always clipped to
    ``1..largest``; so ``n:*`` with ``n > largest`` yields ``[largest]``, as
    RFC 3501 §6.4.8 requires for UID ranges.  For message sequence numbers the
    RFC wants a BAD reply when a number exceeds the message count: check
    ``exceeds(exists)``.
    """

    ranges: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def parse(cls, text: str | bytes) -> SequenceSet:
        """Parse ``seq-number / seq-range`` items separated by commas."""
        if isinstance(text, str):
            if not text.isascii():
                raise ParseError("Invalid sequence set")
            data = text.encode("ascii")
        else:
            data = bytes(text)
        if not data:
            raise ParseError("Empty sequence set")
        ranges: list[tuple[int | None, int | None]] = []
        for item in data.split(b","):
            ends = item.split(b":")
            if len(ends) > 2:
                raise ParseError("Invalid sequence range")
            values = [cls._endpoint(e) for e in ends]
            ranges.append((values[0], values[-1]))
        return cls(tuple(ranges))

    @staticmethod
    def _endpoint(tok: bytes) -> int | None:
        if tok == b"*":
            return None
        if not tok or not tok.isdigit():
            raise ParseError("Invalid sequence set")
        if tok[0] == 0x30:  # nz-number: 0 and leading zeros are invalid
            raise ParseError("Invalid message number 0" if tok.strip(b"0") == b"" else "Invalid sequence set")
        if len(tok) > 10 or int(tok) > MAX_NUMBER:
            raise ParseError("Sequence number out of range")
        return int(tok)

    def __str__(self) -> str:
        def fmt(v: int | None) -> str:
            return "*" if v is None else str(v)

        return ",".join(fmt(a) if a == b else f"{fmt(a)}:{fmt(b)}" for a, b in self.ranges)

    @property
    def has_star(self) -> bool:
        return any(a is None or b is None for a, b in self.ranges)

    def exceeds(self, largest: int) -> bool:
        """True if an explicit number is greater than ``largest``."""
        return any(v is not None and v > largest for r in self.ranges for v in r)

    def intervals(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive ``(lo, hi)`` intervals clipped to ``1..largest``."""
        spans: list[tuple[int, int]] = []
        for a, b in self.ranges:
            if (a is None or b is None) and largest <= 0:
                continue  # '*' denotes nothing in an empty mailbox
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            hi = min(hi, largest)
            if lo <= hi:
                spans.append((lo, hi))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def iter(self, largest: int) -> Iterator[int]:
        """Ascending, de-duplicated numbers of the set within ``1..largest``."""
        for lo, hi in self.intervals(largest):
            yield from range(lo, hi + 1)

    def resolve(self, largest: int) -> list[int]:
        """``list(self.iter(largest))``."""
        return list(self.iter(largest))

    def contains(self, number: int, largest: int) -> bool:
        """Membership test, consistent with :meth:`resolve`."""
        if number < 1 or number > largest:
            return False
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            if lo <= number <= hi:
                return True
        return False


def format_sequence_set(numbers: Iterable[int]) -> str:
    """Compact form of a set of numbers: ``[1, 2, 3, 5]`` -> ``"1:3,5"``.

    Used for UIDPLUS ``APPENDUID``/``COPYUID`` (RFC 4315 §3).
    """
    values = sorted(set(numbers))
    if not values:
        raise ValueError("empty sequence set")
    if values[0] < 1 or values[-1] > MAX_NUMBER:
        raise ValueError("sequence numbers must be in 1..4294967295")
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:]:
        if v != prev + 1:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
            start = v
        prev = v
    parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)
