"""The test suite's loopback DNS server (tests/support/dnsserver.py), reused so the
daemon's SPF/DMARC lookups are answered on this machine, from a known zone."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[2] / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from support.dnsserver import DNSServer  # noqa: E402

__all__ = ["DNSServer"]
