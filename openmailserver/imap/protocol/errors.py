"""The exceptions of the protocol layer: malformed input (`ParseError`) and its refinements."""

from __future__ import annotations

from .syntax import SUPPORTED_CHARSETS


class ParseError(ValueError):
    """Malformed client input.

    ``tag`` is the command tag when it could be read (reply ``<tag> BAD``,
    otherwise ``* BAD``); ``command`` is the upper-cased command name when
    known; ``code`` is an optional response code (without brackets).
    """

    def __init__(
        self,
        message: str,
        *,
        tag: str | None = None,
        command: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.command = command
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, tag={self.tag!r}, code={self.code!r})"


class BadCharsetError(ParseError):
    """SEARCH named a charset we do not support (RFC 3501 §6.4.4).

    Reply ``<tag> NO [BADCHARSET (UTF-8 US-ASCII)] ...`` (see ``code``).
    """

    def __init__(self, charset: str, *, tag: str | None = None) -> None:
        super().__init__(
            "Unsupported charset",
            tag=tag,
            command="SEARCH",
            code="BADCHARSET (" + " ".join(SUPPORTED_CHARSETS) + ")",
        )
        self.charset = charset


class InvalidMailboxName(ParseError):
    """A mailbox name (or LIST pattern) that is not valid modified UTF-7 (RFC 3501 §5.1.3).

    The command is well-formed; the name just cannot exist. Servers answer
    ``NO`` (and LIST/LSUB simply match nothing), not ``BAD``.
    """

    def __init__(self) -> None:
        super().__init__("Mailbox name is not valid modified UTF-7", code="CANNOT")
