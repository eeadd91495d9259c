"""Character classes and limits of the IMAP grammar (RFC 3501 §9) that several modules share.

The names start with an underscore: they belong to this package, not to its users.
Classes and limits that only one module needs live in that module.
"""

from __future__ import annotations

import re

#: nz-number / number are 32-bit unsigned (RFC 3501 §9).
MAX_NUMBER = 0xFFFFFFFF
#: SEARCH charsets we accept (RFC 3501 §6.4.4: US-ASCII mandatory, UTF-8 common).
SUPPORTED_CHARSETS = ("UTF-8", "US-ASCII")

_MAX_DIGITS = 20  # never int() more digits than this (also avoids Python's int/str limit)

_SP = 0x20
_DQUOTE = 0x22
_LPAREN = 0x28
_RPAREN = 0x29
_LBRACE = 0x7B
_LBRACKET = 0x5B
_RBRACKET = 0x5D
_BACKSLASH = 0x5C
_DOT = 0x2E
_LT = 0x3C

# Character classes (RFC 3501 §9).  atom-specials = "(" / ")" / "{" / SP /
# CTL / list-wildcards ("%" "*") / quoted-specials ('"' "\") / resp-specials ("]").
_ATOM_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')  # ATOM-CHAR / "]"
_TAG_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')  # ASTRING-CHAR except "+"
_NUMBER_RE = re.compile(rb"[0-9]+")
