"""Tests for openmailserver.imap.protocol (framing, parsing, serialisation)."""

from __future__ import annotations

import contextlib
import itertools
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmailserver.imap.protocol import (
    CONTINUATION,
    FETCH_MACROS,
    SYSTEM_FLAGS,
    AppendArgs,
    Atom,
    AuthenticateArgs,
    BadCharsetError,
    Command,
    CommandReader,
    ContinuationLine,
    CopyArgs,
    CreateArgs,
    EnableArgs,
    ExpungeArgs,
    FetchArgs,
    FetchAttribute,
    FramingError,
    IdArgs,
    IdleDone,
    InvalidMailboxName,
    ListArgs,
    LiteralAnnounced,
    LiteralData,
    LoginArgs,
    MailboxArgs,
    ParseError,
    RawCommand,
    RenameArgs,
    SearchAll,
    SearchAnd,
    SearchArgs,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchNot,
    SearchOr,
    SearchSequence,
    SearchSize,
    SearchText,
    Section,
    SelectArgs,
    SequenceSet,
    StatusArgs,
    StoreArgs,
    astring,
    decode_mailbox,
    decode_mutf7,
    encode_mailbox,
    encode_mutf7,
    encode_value,
    flag_list,
    format_sequence_set,
    imap_date,
    is_valid_flag,
    is_valid_keyword,
    literal,
    normalize_flag,
    normalize_mailbox,
    nstring,
    parse_command,
    parse_imap_date,
    parse_imap_datetime,
    parse_values,
    quote,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def run_reader(chunks, reader=None, *, accept=lambda ev: True, on_command=None):
    """Feed chunks, deciding literals with ``accept``; return events + writes."""
    reader = reader or CommandReader()
    events = []
    writes = []
    for chunk in chunks:
        for ev in reader.feed(chunk):
            events.append(ev)
            if isinstance(ev, LiteralAnnounced):
                if accept(ev):
                    writes.append(reader.accept_literal())
                else:
                    reader.reject_literal("Refused", code="TOOBIG")
            elif isinstance(ev, RawCommand) and on_command is not None:
                on_command(reader, ev)
    return events, writes


def commands(events):
    return [ev for ev in events if isinstance(ev, RawCommand)]


def args(line: bytes):
    return parse_command(line).args


def perr(line: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_command(line)
    return info.value


# ---------------------------------------------------------------------------
# framing
# ---------------------------------------------------------------------------


class TestFraming:
    def test_simple_line(self):
        events, writes = run_reader([b"a1 NOOP\r\n"])
        assert events == [RawCommand((b"a1 NOOP",))]
        assert writes == []

    def test_bare_lf_accepted(self):
        events, _ = run_reader([b"a1 NOOP\nb2 LOGOUT\n"])
        assert [c.fragments for c in commands(events)] == [(b"a1 NOOP",), (b"b2 LOGOUT",)]

    def test_pipelined_in_one_chunk(self):
        events, _ = run_reader([b"a NOOP\r\nb CAPABILITY\r\nc LOGOUT\r\n"])
        assert [parse_command(c).name for c in commands(events)] == ["NOOP", "CAPABILITY", "LOGOUT"]

    def test_partial_line_waits(self):
        reader = CommandReader()
        assert list(reader.feed(b"a NO")) == []
        assert reader.incomplete
        assert list(reader.feed(b"OP\r")) == []
        assert list(reader.feed(b"\n")) == [RawCommand((b"a NOOP",))]
        assert not reader.incomplete

    def test_empty_lines_ignored(self):
        events, _ = run_reader([b"\r\n\r\n  \r\na NOOP\r\n\n"])
        assert events == [RawCommand((b"a NOOP",))]

    def test_sync_literal_announced_then_continuation(self):
        reader = CommandReader()
        evs = list(reader.feed(b"a LOGIN {3}\r\n"))
        assert evs == [
            LiteralAnnounced(tag="a", command="LOGIN", size=3, synchronizing=True, index=0, total_size=11)
        ]
        assert reader.pending_literal == evs[0]
        assert reader.accept_literal() == CONTINUATION == b"+ Ready for literal data\r\n"
        assert reader.pending_literal is None
        evs = list(reader.feed(b"bob secret\r\n"))
        assert evs == [RawCommand((b"a LOGIN {3}", b" secret"), (b"bob",))]
        assert parse_command(evs[0]).args == LoginArgs("bob", "secret")

    def test_non_sync_literal_needs_no_continuation(self):
        events, writes = run_reader([b"a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\n"])
        announced = [e for e in events if isinstance(e, LiteralAnnounced)]
        assert [a.synchronizing for a in announced] == [False, False]
        assert [a.index for a in announced] == [0, 1]
        assert writes == [b"", b""]
        assert args(commands(events)[0].to_bytes()) == LoginArgs("bob", "secret")

    def test_literal_with_crlf_and_nul(self):
        payload = b"line1\r\nx NOOP\r\n\x00\x00{5}\r\n"
        data = b"a APPEND INBOX {%d}\r\n" % len(payload) + payload + b"\r\nb NOOP\r\n"
        events, _ = run_reader([data])
        cmds = commands(events)
        assert len(cmds) == 2
        assert cmds[0].literals == (payload,)
        assert parse_command(cmds[0]).args.message == payload
        assert parse_command(cmds[1]).name == "NOOP"

    def test_multiple_literals_mixed(self):
        data = b'a LOGIN {3}\r\nbob {4+}\r\np\r\nw\r\n'
        events, writes = run_reader([data])
        assert writes == [CONTINUATION, b""]
        assert parse_command(commands(events)[0]).args == LoginArgs("bob", "p\r\nw")

    def test_zero_length_literal(self):
        events, _ = run_reader([b"a LOGIN {0}\r\n {0+}\r\n\r\n"])
        assert parse_command(commands(events)[0]).args == LoginArgs("", "")

    @pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 13])
    def test_split_at_every_boundary(self, step):
        payload = b"Subject: hi\r\n\r\nbody\x00\r\n"
        data = (
            b"a1 APPEND Drafts (\\Seen) {%d}\r\n" % len(payload)
            + payload
            + b"\r\na2 LOGIN {3+}\r\nbob \"pw\"\r\na3 NOOP\n"
        )
        whole, w1 = run_reader([data])
        chunked, w2 = run_reader([data[i : i + step] for i in range(0, len(data), step)])
        assert whole == chunked and w1 == w2
        assert [parse_command(c).name for c in commands(whole)] == ["APPEND", "LOGIN", "NOOP"]

    def test_reader_pauses_until_decision(self):
        reader = CommandReader()
        evs = list(reader.feed(b"a LOGIN {3}\r\nbob x\r\nb NOOP\r\n"))
        assert len(evs) == 1 and isinstance(evs[0], LiteralAnnounced)
        assert list(reader.events()) == []  # still waiting
        reader.accept_literal()
        evs = list(reader.events())
        assert [parse_command(c).name for c in commands(evs)] == ["LOGIN", "NOOP"]

    def test_reject_sync_literal(self):
        reader = CommandReader()
        out = []
        for ev in reader.feed(b"a APPEND INBOX {100}\r\nb NOOP\r\n"):
            out.append(ev)
            if isinstance(ev, LiteralAnnounced):
                reader.reject_literal("Too big", code="TOOBIG")
        assert out[1] == FramingError("Too big", "a", "TOOBIG")
        assert out[2] == RawCommand((b"b NOOP",))

    def test_reject_non_sync_literal_swallows_payload(self):
        payload = b"x LOGOUT\r\ny DELETE INBOX\r\n"
        data = b"a APPEND INBOX {%d+}\r\n" % len(payload) + payload + b" trailing {3+}\r\nabc\r\nb NOOP\r\n"
        for step in (1, 4, len(data)):
            events, writes = run_reader(
                [data[i : i + step] for i in range(0, len(data), step)], accept=lambda ev: False
            )
            non_literal = [e for e in events if not isinstance(e, LiteralAnnounced)]
            assert non_literal == [FramingError("Refused", "a", "TOOBIG"), RawCommand((b"b NOOP",))]
            assert writes == []

    def test_max_literal_size_auto_refuses(self):
        reader = CommandReader(max_literal_size=10)
        events, _ = run_reader([b"a APPEND INBOX {11}\r\nb NOOP\r\n"], reader)
        assert events == [FramingError("Literal too large", "a", "TOOBIG"), RawCommand((b"b NOOP",))]
        payload = b"c NOOP\r\n" * 3
        events, _ = run_reader([b"a APPEND INBOX {%d+}\r\n" % len(payload) + payload + b"\r\nd NOOP\r\n"], reader)
        assert events == [FramingError("Literal too large", "a", "TOOBIG"), RawCommand((b"d NOOP",))]

    def test_huge_literal_size_digits(self):
        events, _ = run_reader([b"a APPEND INBOX {" + b"9" * 5000 + b"}\r\nb NOOP\r\n"])
        assert events[0] == FramingError("Literal too large", "a", "TOOBIG")
        assert events[1] == RawCommand((b"b NOOP",))

    def test_literal_announcement_reports_command(self):
        events, _ = run_reader([b"t UID COPY 1 {3}\r\nabc\r\n"])
        assert events[0].command == "UID COPY"
        assert parse_command(events[1]).args == CopyArgs(SequenceSet(((1, 1),)), "abc")

    def test_overlong_line_error_with_tag_and_resync(self):
        reader = CommandReader(max_line_length=30)
        long = b"a17 LOGIN " + b"x" * 100 + b"\r\n"
        for step in (1, 7, len(long)):
            chunks = [long[i : i + step] for i in range(0, len(long), step)] + [b"b NOOP\r\n"]
            events, _ = run_reader(chunks, reader)
            assert events == [FramingError("Command line too long", "a17"), RawCommand((b"b NOOP",))]

    def test_overlong_line_without_tag(self):
        events, _ = run_reader([b"x" * 100 + b"\nb NOOP\n"], CommandReader(max_line_length=30))
        assert events == [FramingError("Command line too long", None), RawCommand((b"b NOOP",))]

    def test_line_limit_excludes_literal_payload(self):
        reader = CommandReader(max_line_length=30)
        payload = b"y" * 1000
        events, _ = run_reader([b"a APPEND INBOX {1000}\r\n" + payload + b"\r\n"], reader)
        assert parse_command(commands(events)[0]).args.message == payload

    def test_line_limit_is_cumulative_over_fragments(self):
        reader = CommandReader(max_line_length=30)
        events, _ = run_reader([b"a LOGIN {1}\r\nx " + b"p" * 25 + b"\r\nb NOOP\r\n"], reader)
        assert [e for e in events if not isinstance(e, LiteralAnnounced)] == [
            FramingError("Command line too long", "a"),
            RawCommand((b"b NOOP",)),
        ]

    def test_overlong_line_ending_in_non_sync_literal_swallows_it(self):
        reader = CommandReader(max_line_length=20)
        data = b"a " + b"z" * 40 + b" {8+}\r\nc NOOP\r\n\r\nb NOOP\r\n"
        events, _ = run_reader([data], reader)
        assert events == [FramingError("Command line too long", "a"), RawCommand((b"b NOOP",))]

    def test_literal_marker_inside_quotes_is_not_a_literal(self):
        events, _ = run_reader([b'a LOGIN bob "pw {3}\r\n'])
        assert events == [RawCommand((b'a LOGIN bob "pw {3}',))]
        with pytest.raises(ParseError, match="quoted"):
            parse_command(events[0])
        events, _ = run_reader([b'a LOGIN bob "p\\"w" {3}\r\nabc\r\n'])
        assert isinstance(events[0], LiteralAnnounced)

    def test_literal_marker_must_start_a_token(self):
        events, _ = run_reader([b"a LOGIN bob pw{3}\r\n"])
        assert events == [RawCommand((b"a LOGIN bob pw{3}",))]
        events, _ = run_reader([b"a FETCH 1 BODY[HEADER.FIELDS ({7}\r\nSubject)]\r\n"])
        fetch = parse_command(commands(events)[0]).args
        assert fetch.attributes[0].section.headers == ("Subject",)

    def test_idle_done_pipelined(self):
        def on_command(reader, raw):
            if parse_command(raw).name == "IDLE":
                reader.expect_done()

        events, _ = run_reader([b"a IDLE\r\nDONE\r\nb NOOP\r\n"], on_command=on_command)
        assert events == [RawCommand((b"a IDLE",)), IdleDone(True, b"DONE"), RawCommand((b"b NOOP",))]

    def test_idle_done_case_and_invalid(self):
        reader = CommandReader()
        reader.expect_done()
        assert list(reader.feed(b"\r\ndone \r\n")) == [IdleDone(True, b"done ")]
        reader.expect_done()
        assert list(reader.feed(b"c NOOP\r\n")) == [IdleDone(False, b"c NOOP")]
        assert list(reader.feed(b"d NOOP\r\n")) == [RawCommand((b"d NOOP",))]

    def test_expect_line_for_authenticate(self):
        def on_command(reader, raw):
            if parse_command(raw).name == "AUTHENTICATE":
                reader.expect_line()

        events, _ = run_reader([b"a AUTHENTICATE PLAIN\r\nAGJvYgBwdw==\r\nb NOOP\r\n"], on_command=on_command)
        assert events[1] == ContinuationLine(b"AGJvYgBwdw==")
        assert events[2] == RawCommand((b"b NOOP",))
        reader = CommandReader()
        reader.expect_line()
        assert list(reader.feed(b"\r\n")) == [ContinuationLine(b"")]
        reader.expect_line()
        assert list(reader.feed(b"{5}\r\n")) == [ContinuationLine(b"{5}")]

    def test_misuse_raises_runtime_error(self):
        reader = CommandReader()
        with pytest.raises(RuntimeError):
            reader.accept_literal()
        with pytest.raises(RuntimeError):
            reader.reject_literal()
        list(reader.feed(b"a LOGIN {3}\r\n"))
        with pytest.raises(RuntimeError):
            reader.expect_done()
        with pytest.raises(ValueError):
            CommandReader(max_line_length=0)

    def test_reset_drops_buffer(self):
        # A server stops iterating after STARTTLS and drops what was pipelined.
        reader = CommandReader()
        it = reader.feed(b"a STARTTLS\r\nb LOGIN evil injected\r\n")
        assert next(it) == RawCommand((b"a STARTTLS",))
        assert reader.reset() > 0
        assert list(it) == []
        assert not reader.incomplete

    def test_raw_command_to_bytes_roundtrip(self):
        data = b"a LOGIN {3}\r\nbob {2+}\r\npw\r\n"
        events, _ = run_reader([data])
        assert commands(events)[0].to_bytes() == data
        with pytest.raises(ValueError):
            RawCommand((b"a",), (b"x",))


# ---------------------------------------------------------------------------
# command parsing
# ---------------------------------------------------------------------------


class TestCommands:
    @pytest.mark.parametrize(
        "name", ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "EXPUNGE",
                 "UNSELECT", "IDLE", "NAMESPACE"]
    )
    def test_no_argument_commands(self, name):
        assert parse_command(b"t1 " + name.lower().encode()) == Command("t1", name)
        err = perr(b"t1 " + name.encode() + b" extra")
        assert err.tag == "t1" and err.command == name and "extra" in err.message

    def test_tag_and_name(self):
        cmd = parse_command(b"A0001 noop\r\n")
        assert cmd.tag == "A0001" and cmd.name == "NOOP" and cmd.full_name == "NOOP"
        assert parse_command(b"a.b]c NOOP").tag == "a.b]c"  # ']' is ASTRING-CHAR

    @pytest.mark.parametrize("line", [b"", b" NOOP", b"+ NOOP", b"* NOOP", b"(a) NOOP", b'"a" NOOP'])
    def test_bad_tag(self, line):
        err = perr(line)
        assert err.tag is None

    def test_missing_and_unknown_command(self):
        assert perr(b"a").message == "Missing command"
        err = perr(b"a FROB x")
        assert (err.tag, err.message) == ("a", "Unknown command")
        assert perr(b"a UID NOOP").message == "Invalid UID command"
        assert perr(b"a UID").message == "Missing UID command"
        assert perr(b"a\tNOOP").tag is None or perr(b"a\tNOOP").tag == "a"

    def test_trailing_space_tolerated(self):
        assert parse_command(b"a NOOP  ") == Command("a", "NOOP")
        assert args(b"a SELECT INBOX ") == SelectArgs("INBOX")

    def test_authenticate(self):
        assert args(b"a AUTHENTICATE plain") == AuthenticateArgs("PLAIN")
        assert args(b"a AUTHENTICATE PLAIN AGJvYgBwdw==") == AuthenticateArgs("PLAIN", "AGJvYgBwdw==")
        assert args(b"a AUTHENTICATE PLAIN =") == AuthenticateArgs("PLAIN", "=")
        assert perr(b"a AUTHENTICATE").message == "Missing authentication mechanism"
        assert perr(b"a AUTHENTICATE PLAIN abc").message == "Invalid initial response"
        perr(b"a AUTHENTICATE PLAIN AA== x")

    def test_login(self):
        assert args(b"a LOGIN bob secret") == LoginArgs("bob", "secret")
        assert args(b'a LOGIN "bob smith" "p\\"w\\\\d"') == LoginArgs("bob smith", 'p"w\\d')
        assert args(b"a LOGIN {3}\r\nbob {2}\r\npw") == LoginArgs("bob", "pw")
        assert args('a LOGIN "jörg" "pässword"'.encode()) == LoginArgs("jörg", "pässword")
        assert args(b"a LOGIN b]ob x") == LoginArgs("b]ob", "x")
        assert "secret" not in repr(LoginArgs("bob", "secret"))
        assert perr(b"a LOGIN bob").message == "Missing password"
        assert perr(b"a LOGIN").message == "Missing user name"
        assert perr(b"a LOGIN bob pw x").message == "Unexpected extra arguments"
        assert "quoted" in perr(b'a LOGIN "bob pw').message
        assert "quoted" in perr(b'a LOGIN "b\\ob" pw').message  # only \\ and \" escapes
        assert perr(b"a LOGIN bob\x00 pw").tag == "a"
        assert perr(b'a LOGIN "\xff\xfe" pw').message == "Invalid UTF-8 in user name"

    def test_select_examine(self):
        assert parse_command(b"a SELECT inbox") == Command("a", "SELECT", SelectArgs("INBOX"))
        assert args(b"a EXAMINE Archive/2024") == SelectArgs("Archive/2024")
        assert args(b"a SELECT INBOX (condstore)") == SelectArgs("INBOX", ("CONDSTORE",))
        assert args(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41:211,214:541))") == SelectArgs(
            "INBOX", ("QRESYNC", ("67890007", "20050715194045000", "41:211,214:541"))
        )
        assert args(b'a SELECT "&AOk-t&AOk-"') == SelectArgs("été")
        assert perr(b"a SELECT").message == "Missing mailbox name"
        assert "UTF-7" in perr(b"a SELECT &Jjo").message
        assert "UTF-7" in perr('a SELECT "été"'.encode()).message
        perr(b"a SELECT INBOX CONDSTORE")
        perr(b"a SELECT INBOX (CONDSTORE")

    @pytest.mark.parametrize("name", ["DELETE", "SUBSCRIBE", "UNSUBSCRIBE"])
    def test_mailbox_commands(self, name):
        assert parse_command(f"x {name} Foo".encode()) == Command("x", name, MailboxArgs("Foo"))
        assert args(f'x {name} "InBoX"'.encode()) == MailboxArgs("INBOX")
        perr(f"x {name}".encode())
        perr(f"x {name} a b".encode())

    def test_create(self):
        assert args(b"a CREATE Projects/New") == CreateArgs("Projects/New")
        created = args(b"a CREATE MyDrafts (USE (\\Drafts))")
        assert created == CreateArgs("MyDrafts", ("USE", ("\\Drafts",)))
        assert created.special_use == ("\\Drafts",)
        assert args(b"a CREATE x").special_use == ()
        perr(b"a CREATE")

    def test_rename(self):
        assert args(b"a RENAME old new") == RenameArgs("old", "new")
        assert args(b'a RENAME inbox "Old Inbox"') == RenameArgs("INBOX", "Old Inbox")
        assert perr(b"a RENAME old").message == "Missing new mailbox name"

    def test_list_and_lsub(self):
        assert args(b'a LIST "" *') == ListArgs("", ("*",))
        assert args(b'a LIST "" %').pattern == "%"
        assert args(b"a LIST ~/Mail/ foo/%/b]ar*") == ListArgs("~/Mail/", ("foo/%/b]ar*",))
        assert args(b'a LIST "" "&AOk-*"') == ListArgs("", ("é*",))
        assert args(b"a LIST {0}\r\n {1}\r\n*") == ListArgs("", ("*",))
        assert args(b"a LIST inbox inbox") == ListArgs("inbox", ("inbox",))  # patterns are not normalised
        assert args(b'a LIST "" * RETURN (SPECIAL-USE)') == ListArgs("", ("*",), (), ("SPECIAL-USE",))
        assert args(b'a LIST (special-use) "" ("%" INBOX)') == ListArgs("", ("%", "INBOX"), ("SPECIAL-USE",))
        assert args(b'a LSUB "" news.*') == ListArgs("", ("news.*",))
        assert perr(b'a LIST ""').message == "Missing mailbox pattern"
        perr(b'a LIST "" * EXTRA')
        perr(b'a LIST "" * RETURN')
        perr(b'a LSUB "" * RETURN (X)')
        perr(b"a LIST")

    def test_status(self):
        assert args(b"a STATUS blurdybloop (UIDNEXT messages unseen)") == StatusArgs(
            "blurdybloop", ("UIDNEXT", "MESSAGES", "UNSEEN")
        )
        assert perr(b"a STATUS x (FOO)").message == "Unknown status item"
        perr(b"a STATUS x ()")
        perr(b"a STATUS x MESSAGES")
        perr(b"a STATUS x (MESSAGES")
        perr(b"a STATUS x")

    def test_append(self):
        msg = b"From: a@b\r\n\r\nhi\r\n"
        lit = b"{%d}\r\n" % len(msg) + msg
        assert args(b"a APPEND saved " + lit) == AppendArgs("saved", msg)
        parsed = args(b'a APPEND INBOX (\\seen $Label) "05-Jan-2024 10:11:12 +0100" ' + lit)
        assert parsed.flags == ("\\Seen", "$Label")
        assert parsed.internal_date == datetime(2024, 1, 5, 10, 11, 12, tzinfo=timezone(timedelta(hours=1)))
        assert parsed.message == msg
        assert args(b'a APPEND INBOX " 5-Jan-2024 10:11:12 -0000" ' + lit).internal_date.day == 5
        assert args(b"a APPEND INBOX () " + lit).flags == ()
        assert args(b"a APPEND INBOX {3+}\r\nabc").message == b"abc"
        assert perr(b'a APPEND INBOX "hello"').message == "Invalid date-time"
        assert perr(b'a APPEND INBOX "05-Jan-2024 10:11:12 +0100" "hi"').message == "Invalid message literal"
        assert perr(b"a APPEND INBOX").message == "Missing message literal"
        assert perr(b"a APPEND INBOX (\\Seen)").message == "Missing message literal"
        assert perr(b'a APPEND INBOX "32-Jan-2024 10:11:12 +0100" {1}\r\nx').message == "Invalid date-time"
        assert perr(b"a APPEND INBOX (\\Recent) {1}\r\nx").message == "Invalid system flag"
        assert perr(b"a APPEND INBOX (\\Foo) {1}\r\nx").message == "Invalid system flag"
        assert perr(b"a APPEND INBOX {1}\r\nx y").message == "Unexpected extra arguments"
        assert perr(b"a APPEND INBOX {5}\r\nx").message == "Truncated literal"

    def test_expunge_and_uid_expunge(self):
        assert parse_command(b"a EXPUNGE") == Command("a", "EXPUNGE")
        cmd = parse_command(b"a UID EXPUNGE 3000:3002,3005")
        assert cmd.uid and cmd.full_name == "UID EXPUNGE"
        assert cmd.args == ExpungeArgs(SequenceSet(((3000, 3002), (3005, 3005))))
        assert perr(b"a UID EXPUNGE").message == "Missing sequence set"
        assert perr(b"a UID EXPUNGE 0").message == "Invalid message number 0"

    @pytest.mark.parametrize("name", ["COPY", "MOVE"])
    def test_copy_move(self, name):
        cmd = parse_command(f"a {name} 2:4 MEETING".encode())
        assert cmd.args == CopyArgs(SequenceSet(((2, 4),)), "MEETING") and not cmd.uid
        cmd = parse_command(f"a uid {name.lower()} 1:* inbox".encode())
        assert cmd.uid and cmd.name == name and cmd.args.mailbox == "INBOX"
        perr(f"a {name} 1".encode())
        perr(f"a {name} x INBOX".encode())
        perr(f"a {name} 1 INBOX extra".encode())

    def test_store(self):
        s = SequenceSet(((2, 4),))
        assert args(b"a STORE 2:4 FLAGS (\\Deleted)") == StoreArgs(s, "replace", ("\\Deleted",))
        assert args(b"a STORE 2:4 +FLAGS.SILENT (\\Deleted \\seen)") == StoreArgs(
            s, "add", ("\\Deleted", "\\Seen"), silent=True
        )
        assert args(b"a STORE 2:4 -flags \\Flagged $Junk") == StoreArgs(s, "remove", ("\\Flagged", "$Junk"))
        assert args(b"a STORE 2:4 FLAGS ()") == StoreArgs(s, "replace", ())
        assert parse_command(b"a UID STORE 1 +FLAGS (x)").uid
        assert perr(b"a STORE 2:4 FLAGZ (x)").message == "Invalid store item"
        assert perr(b"a STORE 2:4 FLAGS.SILENTX (x)").message == "Invalid store item"
        assert perr(b"a STORE 2:4 +FLAGS").message == "Missing flags"
        assert perr(b"a STORE 2:4 +FLAGS (\\Recent)").message == "Invalid system flag"
        assert perr(b"a STORE 2:4 +FLAGS (\\*)").message == "Invalid flag"
        assert perr(b"a STORE 2:4 +FLAGS (a b").message == "Missing )"
        assert perr(b"a STORE 0 +FLAGS (a)").message == "Invalid message number 0"
        perr(b"a STORE 1 +FLAGS (a) b")
        perr(b'a STORE 1 +FLAGS ("a")')

    def test_enable(self):
        assert args(b"a ENABLE condstore UTF8=ACCEPT") == EnableArgs(("CONDSTORE", "UTF8=ACCEPT"))
        assert perr(b"a ENABLE").message == "Missing capability"

    def test_id(self):
        assert args(b"a ID NIL") == IdArgs(None)
        assert args(b"a ID nil").as_dict() == {}
        assert args(b"a ID ()") == IdArgs(())
        parsed = args(b'a ID ("name" "sodr" "version" "19.34" "vendor" NIL)')
        assert parsed.as_dict() == {"name": "sodr", "version": "19.34", "vendor": None}
        perr(b"a ID")
        perr(b"a ID FOO")
        perr(b'a ID ("name")')
        perr(b'a ID ("name" "x"')
        perr(b'a ID ("name" "x") x')

    def test_unknown_fetch_attribute_and_sections(self):
        assert perr(b"a FETCH 1 BINARY[1]").message == "Unknown fetch attribute"
        assert perr(b"a FETCH 1 (FLAGS FOO)").message == "Unknown fetch attribute"
        for bad in [b"BODY[1.]", b"BODY[0]", b"BODY[MIME]", b"BODY[1.FOO]", b"BODY[HEADER.FIELDS]",
                    b"BODY[HEADER.FIELDS ()]", b"BODY[1X]", b"BODY[01]", b"BODY[HEADER"]:
            with pytest.raises(ParseError):
                parse_command(b"a FETCH 1 " + bad)
        assert perr(b"a FETCH 1 BODY[]<0.0>").message == "Invalid partial"
        assert perr(b"a FETCH 1 BODY[]<1>").message == "Invalid partial"
        assert perr(b"a FETCH 1 BODY.PEEK").message == "Unknown fetch attribute"
        assert perr(b"a FETCH 1 (ALL)").message == "Unknown fetch attribute"
        assert perr(b"a FETCH 1 ()").message == "Invalid fetch attribute"
        assert perr(b"a FETCH 1").message == "Missing fetch attributes"
        assert perr(b"a FETCH 1 BODY[HEADER.FIELDS (a:b)]").message == "Invalid header field name"

    def test_literal_errors(self):
        assert perr(b"a LOGIN {3}\r\nab").message == "Truncated literal"
        assert perr(b"a LOGIN bob {x}").message == "Invalid literal"
        assert perr(b"a LOGIN bob pw\r\nb NOOP").message == "Unexpected line break"
        raw = RawCommand((b"a LOGIN {4}", b" x"), (b"abc",))
        assert perr(raw).message == "Literal size mismatch"
        raw = RawCommand((b"a LOGIN {3}x", b" x"), (b"abc",))
        assert perr(raw).message == "Literal without data"

    def test_deep_nesting_is_a_parse_error(self):
        assert perr(b"a SELECT x " + b"(" * 5000 + b")" * 5000).message == "Too deeply nested"
        assert perr(b"a SEARCH " + b"NOT " * 5000 + b"ALL").message == "Too deeply nested"
        assert perr(b"a SEARCH " + b"(" * 100 + b"ALL" + b")" * 100).message == "Too deeply nested"


# ---------------------------------------------------------------------------
# FETCH attributes
# ---------------------------------------------------------------------------


class TestFetch:
    def fetch(self, text: str) -> FetchArgs:
        return args(b"a FETCH 1 " + text.encode())

    @pytest.mark.parametrize("macro", ["ALL", "FAST", "FULL"])
    def test_macros(self, macro):
        f = self.fetch(macro.lower())
        assert f.macro == macro and f.attributes == FETCH_MACROS[macro]
        names = [a.name for a in f.attributes]
        assert names[:3] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
        assert ("ENVELOPE" in names) == (macro != "FAST")
        assert ("BODY" in names) == (macro == "FULL")

    @pytest.mark.parametrize(
        "name,seen",
        [("FLAGS", False), ("INTERNALDATE", False), ("RFC822", True), ("RFC822.HEADER", False),
         ("RFC822.SIZE", False), ("RFC822.TEXT", True), ("ENVELOPE", False), ("BODY", False),
         ("BODYSTRUCTURE", False), ("UID", False)],
    )
    def test_simple_attributes(self, name, seen):
        (att,) = self.fetch(name.lower()).attributes
        assert att == FetchAttribute(name)
        assert att.response_name == name and att.sets_seen is seen

    @pytest.mark.parametrize(
        "text,section,partial,peek,response,seen",
        [
            ("BODY[]", Section(), None, False, "BODY[]", True),
            ("BODY.PEEK[]", Section(), None, True, "BODY[]", False),
            ("BODY[TEXT]<0.2048>", Section((), "TEXT"), (0, 2048), False, "BODY[TEXT]<0>", True),
            ("body.peek[header]", Section((), "HEADER"), None, True, "BODY[HEADER]", False),
            ("BODY[1.2.3]", Section((1, 2, 3)), None, False, "BODY[1.2.3]", True),
            ("BODY[4.2.MIME]", Section((4, 2), "MIME"), None, False, "BODY[4.2.MIME]", True),
            ("BODY[3.HEADER]", Section((3,), "HEADER"), None, False, "BODY[3.HEADER]", True),
            ("BODY[2.text]<10.5>", Section((2,), "TEXT"), (10, 5), False, "BODY[2.TEXT]<10>", True),
            (
                "BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.100>",
                Section((), "HEADER.FIELDS", ("SUBJECT",)), (0, 100), True,
                "BODY[HEADER.FIELDS (SUBJECT)]<0>", False,
            ),
            (
                'BODY[1.HEADER.FIELDS.NOT (Date "From" {2}\r\nTo)]',
                Section((1,), "HEADER.FIELDS.NOT", ("Date", "From", "To")), None, False,
                "BODY[1.HEADER.FIELDS.NOT (Date From To)]", True,
            ),
        ],
    )
    def test_sections(self, text, section, partial, peek, response, seen):
        (att,) = self.fetch(text).attributes
        assert att == FetchAttribute("BODY", section, partial, peek)
        assert att.response_name == response
        assert att.sets_seen is seen

    def test_attribute_list(self):
        f = args(b"a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM)] UID rfc822.size)")
        assert [a.response_name for a in f.attributes] == [
            "FLAGS", "BODY[HEADER.FIELDS (DATE FROM)]", "UID", "RFC822.SIZE"
        ]
        assert f.macro is None and f.sequence_set == SequenceSet(((1, None),))

    def test_section_str_quotes_odd_header_names(self):
        assert str(Section((), "HEADER.FIELDS", ("X-A%B",))) == 'HEADER.FIELDS ("X-A%B")'


# ---------------------------------------------------------------------------
# SEARCH
# ---------------------------------------------------------------------------


def search(text: bytes) -> SearchArgs:
    return args(b"a SEARCH " + text)


class TestSearch:
    @pytest.mark.parametrize(
        "key,expected",
        [
            (b"ALL", SearchAll()),
            (b"ANSWERED", SearchFlag("\\Answered")),
            (b"UNANSWERED", SearchFlag("\\Answered", False)),
            (b"DELETED", SearchFlag("\\Deleted")),
            (b"UNDELETED", SearchFlag("\\Deleted", False)),
            (b"DRAFT", SearchFlag("\\Draft")),
            (b"UNDRAFT", SearchFlag("\\Draft", False)),
            (b"FLAGGED", SearchFlag("\\Flagged")),
            (b"UNFLAGGED", SearchFlag("\\Flagged", False)),
            (b"seen", SearchFlag("\\Seen")),
            (b"UNSEEN", SearchFlag("\\Seen", False)),
            (b"RECENT", SearchFlag("\\Recent")),
            (b"OLD", SearchFlag("\\Recent", False)),
            (b"NEW", SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))),
            (b"KEYWORD $Forwarded", SearchFlag("$Forwarded")),
            (b"UNKEYWORD Junk", SearchFlag("Junk", False)),
            (b"BCC x@y", SearchHeader("Bcc", "x@y")),
            (b'CC ""', SearchHeader("Cc", "")),
            (b'FROM "Smith"', SearchHeader("From", "Smith")),
            (b"SUBJECT {5}\r\nhi yo", SearchHeader("Subject", "hi yo")),
            (b"TO bob", SearchHeader("To", "bob")),
            (b"HEADER X-Spam yes", SearchHeader("X-Spam", "yes")),
            (b"BODY hello", SearchText("BODY", "hello")),
            (b"TEXT hello", SearchText("TEXT", "hello")),
            (b"BEFORE 1-Feb-1994", SearchDate("INTERNAL", "BEFORE", date(1994, 2, 1))),
            (b'ON "01-feb-1994"', SearchDate("INTERNAL", "ON", date(1994, 2, 1))),
            (b"SINCE 29-Feb-2024", SearchDate("INTERNAL", "SINCE", date(2024, 2, 29))),
            (b"SENTBEFORE 1-Jan-2000", SearchDate("SENT", "BEFORE", date(2000, 1, 1))),
            (b"SENTON 1-Jan-2000", SearchDate("SENT", "ON", date(2000, 1, 1))),
            (b"SENTSINCE 1-Jan-2000", SearchDate("SENT", "SINCE", date(2000, 1, 1))),
            (b"LARGER 1024", SearchSize("LARGER", 1024)),
            (b"SMALLER 0", SearchSize("SMALLER", 0)),
            (b"UID 1:*", SearchSequence(SequenceSet(((1, None),)), uid=True)),
            (b"2,4:7,*", SearchSequence(SequenceSet(((2, 2), (4, 7), (None, None))))),
            (b"NOT SEEN", SearchNot(SearchFlag("\\Seen"))),
            (b"OR SEEN FLAGGED", SearchOr(SearchFlag("\\Seen"), SearchFlag("\\Flagged"))),
            (b"(SEEN FLAGGED)", SearchAnd((SearchFlag("\\Seen"), SearchFlag("\\Flagged")))),
        ],
    )
    def test_each_key(self, key, expected):
        s = search(key)
        assert s.charset is None
        assert s.criteria == SearchAnd((expected,))

    def test_complex_tree(self):
        s = search(b'CHARSET UTF-8 OR (FROM "bob" UNSEEN) NOT OR 1:5 UID 7 SUBJECT "\xc3\xa9t\xc3\xa9" LARGER 10')
        assert s.charset == "UTF-8"
        assert s.criteria == SearchAnd((
            SearchOr(
                SearchAnd((SearchHeader("From", "bob"), SearchFlag("\\Seen", False))),
                SearchNot(SearchOr(
                    SearchSequence(SequenceSet(((1, 5),))),
                    SearchSequence(SequenceSet(((7, 7),)), uid=True),
                )),
            ),
            SearchHeader("Subject", "été"),
            SearchSize("LARGER", 10),
        ))

    def test_uid_search(self):
        cmd = parse_command(b"a UID SEARCH charset us-ascii DELETED")
        assert cmd.uid and cmd.args.charset == "US-ASCII"

    def test_bad_charset(self):
        with pytest.raises(BadCharsetError) as info:
            parse_command(b"a7 SEARCH CHARSET KOI8-R FROM x")
        err = info.value
        assert err.tag == "a7" and err.charset == "KOI8-R"
        assert err.code == "BADCHARSET (UTF-8 US-ASCII)"
        assert isinstance(err, ParseError)

    @pytest.mark.parametrize(
        "bad,message",
        [
            (b"", "Missing search criteria"),
            (b"FOO", "Unknown search key"),
            (b"CHARSET", "Missing charset"),
            (b"CHARSET UTF-8", "Missing search criteria"),
            (b"BEFORE 31-Feb-2024", "Invalid date"),
            (b"BEFORE 1-Foo-2024", "Invalid date"),
            (b"BEFORE 2024-01-01", "Invalid date"),
            (b'ON "1-Jan-2024', "Unterminated or invalid quoted string"),
            (b"SINCE", "Missing date"),
            (b"OR SEEN", "Missing search key"),
            (b"NOT", "Missing search key"),
            (b"(SEEN", "Missing )"),
            (b"SEEN)", "Unexpected extra arguments"),
            (b"()", "Invalid search key"),
            (b"LARGER x", "Invalid size"),
            (b"LARGER", "Missing size"),
            (b"UID 0", "Invalid message number 0"),
            (b"1:0", "Invalid message number 0"),
            (b"HEADER X", "Missing search string"),
            (b"KEYWORD \\Seen", "Invalid keyword"),
            (b"SEEN  FLAGGED", "Invalid search key"),
        ],
    )
    def test_errors(self, bad, message):
        assert perr(b"a SEARCH " + bad).message == message


# ---------------------------------------------------------------------------
# sequence sets
# ---------------------------------------------------------------------------


class TestSequenceSet:
    def test_parse_and_str(self):
        s = SequenceSet.parse("1,3:5,7:*,*")
        assert s.ranges == ((1, 1), (3, 5), (7, None), (None, None))
        assert str(s) == "1,3:5,7:*,*"
        assert SequenceSet.parse(b"5:3").ranges == ((5, 3),)
        assert s.has_star and not SequenceSet.parse("1").has_star

    def test_resolve(self):
        s = SequenceSet.parse("1,3:5,7:*")
        assert s.resolve(10) == [1, 3, 4, 5, 7, 8, 9, 10]
        assert s.resolve(4) == [1, 3, 4]
        assert SequenceSet.parse("5:3").resolve(10) == [3, 4, 5]
        assert SequenceSet.parse("*").resolve(10) == [10]
        assert SequenceSet.parse("*:4").resolve(10) == [4, 5, 6, 7, 8, 9, 10]
        assert SequenceSet.parse("3:4,1:3,4").resolve(10) == [1, 2, 3, 4]
        assert list(SequenceSet.parse("2,1").iter(5)) == [1, 2]

    def test_star_beyond_largest(self):
        # RFC 3501 §6.4.8: "559:*" includes the last UID even if 559 > it.
        s = SequenceSet.parse("559:*")
        assert s.resolve(100) == [100]
        assert s.contains(100, 100) and not s.contains(99, 100)

    def test_empty_mailbox(self):
        assert SequenceSet.parse("1:*").resolve(0) == []
        assert SequenceSet.parse("*").resolve(0) == []
        assert SequenceSet.parse("3:*").resolve(0) == []
        assert SequenceSet.parse("1:3").resolve(0) == []
        assert not SequenceSet.parse("*").contains(0, 0)

    def test_huge_ranges_are_clipped(self):
        s = SequenceSet.parse("1:4294967295")
        assert s.intervals(3) == [(1, 3)]
        assert s.exceeds(3) and not SequenceSet.parse("1:*").exceeds(3)

    @pytest.mark.parametrize(
        "bad", ["", "0", "1:0", "0:*", "01", "1,,2", "1:2:3", ",1", "1,", "a", "4294967296", "1 2", "1:", "é"]
    )
    def test_invalid(self, bad):
        with pytest.raises(ParseError):
            SequenceSet.parse(bad)

    def test_format(self):
        assert format_sequence_set([1, 2, 3, 5]) == "1:3,5"
        assert format_sequence_set([5, 3, 4, 4, 10, 11, 1]) == "1,3:5,10:11"
        assert format_sequence_set([7]) == "7"
        with pytest.raises(ValueError):
            format_sequence_set([])
        with pytest.raises(ValueError):
            format_sequence_set([0, 1])


# ---------------------------------------------------------------------------
# mailbox names, dates, flags
# ---------------------------------------------------------------------------


class TestMailboxNames:
    @pytest.mark.parametrize(
        "name,encoded",
        [
            ("INBOX", "INBOX"),
            ("a&b", "a&-b"),
            ("&", "&-"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("é&é", "&AOk-&-&AOk-"),
            ("😀", "&2D3eAA-"),
            ("tab\there", "tab&AAk-here"),
        ],
    )
    def test_roundtrip_examples(self, name, encoded):
        assert encode_mutf7(name) == encoded
        assert decode_mutf7(encoded) == name
        assert decode_mutf7(encoded.encode()) == name

    @pytest.mark.parametrize(
        "bad", ["&", "&Jjo", "&U,BTFw-&ZeVnLIqe-", "&AGE-", "&AOk", "&A-", "&AOl-", "é", "a\x00", "&2D0-", "&=-"]
    )
    def test_invalid(self, bad):
        with pytest.raises(ParseError):
            decode_mutf7(bad)

    def test_inbox_normalisation(self):
        assert normalize_mailbox("iNbOx") == "INBOX"
        assert normalize_mailbox("INBOX/sub") == "INBOX/sub"
        assert normalize_mailbox("ınbox") == "ınbox"  # noqa: RUF001 - dotless i is not ASCII
        assert decode_mailbox(b"inbox") == "INBOX"

    def test_encode_mailbox(self):
        assert encode_mailbox("INBOX") == b"INBOX"
        assert encode_mailbox("My Folder") == b'"My Folder"'
        assert encode_mailbox("Entwürfe") == b"Entw&APw-rfe"
        assert encode_mailbox("") == b'""'

    def test_lone_surrogate_cannot_be_encoded(self):
        with pytest.raises(ValueError):
            encode_mutf7("\ud800")


class TestDates:
    def test_parse_date(self):
        assert parse_imap_date("1-Feb-1994") == date(1994, 2, 1)
        assert parse_imap_date(b"17-jul-1996") == date(1996, 7, 17)
        for bad in ["", "1-Feb-94", "1 Feb 1994", "001-Feb-1994", "30-Feb-2000", "1-Feb-0000", "1-Fév-1994",
                    b"\xff"]:
            with pytest.raises(ParseError):
                parse_imap_date(bad)

    def test_parse_datetime(self):
        dt = parse_imap_datetime("17-Jul-1996 02:44:25 -0700")
        assert dt == datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))
        assert parse_imap_datetime(" 7-Jul-1996 02:44:25 +0000").day == 7
        assert parse_imap_datetime("31-Dec-1998 23:59:60 +0000").second == 59  # leap second
        for bad in ["17-Jul-1996 02:44:25", "17-Jul-1996 24:00:00 +0000", "17-Jul-1996 02:44:25 +2400",
                    "17-Jul-1996 02:44:25 +0060", "17-Jul-1996 2:44:25 +0000", "17-Jul-1996 02:61:00 +0000"]:
            with pytest.raises(ParseError):
                parse_imap_datetime(bad)

    def test_format(self):
        dt = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(timedelta(hours=-7)))
        assert imap_date(dt) == "17-Jul-1996 02:44:25 -0700"
        assert imap_date(datetime(2024, 1, 5, 1, 2, 3)) == "05-Jan-2024 01:02:03 +0000"
        ist = timezone(timedelta(hours=5, minutes=30))
        assert imap_date(datetime(2024, 1, 5, tzinfo=ist)) == "05-Jan-2024 00:00:00 +0530"
        assert parse_imap_datetime(imap_date(dt)) == dt


class TestFlags:
    def test_system_flags(self):
        expected = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent"}
        assert expected == SYSTEM_FLAGS
        assert normalize_flag("\\SEEN") == "\\Seen"
        assert normalize_flag("$Junk") == "$Junk"
        assert normalize_flag("\\ſeen") == "\\ſeen"  # noqa: RUF001 - long s upper-cases to S

    def test_validation(self):
        assert is_valid_keyword("$Forwarded") and is_valid_keyword("NonJunk")
        assert not is_valid_keyword("\\Seen") and not is_valid_keyword("a b") and not is_valid_keyword("")
        assert not is_valid_keyword("é") and not is_valid_keyword("a]")
        assert is_valid_flag("\\Seen") and is_valid_flag("\\Custom") and is_valid_flag("foo")
        assert not is_valid_flag("\\") and not is_valid_flag("(x)")

    def test_flag_list(self):
        assert flag_list(["\\Seen", "$Label"]) == b"(\\Seen $Label)"
        assert flag_list([]) == b"()"
        assert flag_list(["\\*"]) == b"(\\*)"
        with pytest.raises(ValueError):
            flag_list(["bad flag"])


# ---------------------------------------------------------------------------
# serialisation
# ---------------------------------------------------------------------------


class TestSerialise:
    def test_quote(self):
        assert quote("hello") == b'"hello"'
        assert quote('a "b" \\c') == b'"a \\"b\\" \\\\c"'
        assert quote("") == b'""'
        assert quote("a\r\nb") == b"{4}\r\na\r\nb"
        assert quote("a\x00") == b"{2}\r\na\x00"
        assert quote("é") == b"{2}\r\n\xc3\xa9"
        assert quote("x" * 2000) == b"{2000}\r\n" + b"x" * 2000
        assert quote("xy", max_quoted=1) == b"{2}\r\nxy"

    def test_astring(self):
        assert astring("INBOX") == b"INBOX"
        assert astring("a]b") == b"a]b"
        assert astring("a b") == b'"a b"'
        assert astring("") == b'""'
        assert astring("nil") == b'"nil"'
        assert astring("%") == b'"%"'
        assert astring("a\nb") == b"{3}\r\na\nb"

    def test_nstring_literal(self):
        assert nstring(None) == b"NIL"
        assert nstring("x") == b'"x"'
        assert literal(b"abc") == b"{3}\r\nabc"

    def test_encode_value(self):
        value = [Atom("\\Seen"), None, 42, "two words", b"bin\x00", LiteralData(b"lit"), [Atom("X"), []]]
        assert encode_value(value) == b'(\\Seen NIL 42 "two words" {4}\r\nbin\x00 {3}\r\nlit (X ()))'
        with pytest.raises(TypeError):
            encode_value(True)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            encode_value(1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            encode_value(-1)

    def test_parse_values(self):
        assert parse_values(b'FOO "bar" NIL (1 {3}\r\nx\r\n) \\Seen') == (
            Atom("FOO"), "bar", None, (Atom("1"), b"x\r\n"), Atom("\\Seen")
        )
        assert parse_values(b"") == ()
        for bad in [b"(", b'"x', b"{3}\r\nab", b"a  b", b")"]:
            with pytest.raises(ParseError):
                parse_values(bad)


# ---------------------------------------------------------------------------
# property-based tests
# ---------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IMAP_TOKENS = [
    b"a", b"A1", b" ", b"  ", b"\r\n", b"\n", b"\r", b"{3}\r\n", b"{0}\r\n", b"{2+}\r\n", b"{99999999999}\r\n",
    b'"', b'\\', b"(", b")", b"[", b"]", b"<", b">", b"*", b"%", b"NIL", b"UID", b"FETCH", b"STORE",
    b"SEARCH", b"APPEND", b"LOGIN", b"SELECT", b"LIST", b"STATUS", b"ID", b"IDLE", b"DONE", b"AUTHENTICATE",
    b"ENABLE", b"CREATE", b"COPY", b"MOVE", b"EXPUNGE", b"1:*", b"0", b"4294967296", b"BODY.PEEK[",
    b"HEADER.FIELDS", b"1.2.MIME", b"<0.10>", b"+FLAGS.SILENT", b"\\Seen", b"CHARSET", b"OR", b"NOT",
    b"1-Feb-1994", b"&AOk-", b"&", b"\x00", b"\xff", b"\xc3\xa9", b"RETURN", b"USE",
]

imap_ish = st.lists(st.sampled_from(IMAP_TOKENS) | st.binary(max_size=8), max_size=40).map(b"".join)
any_input = st.one_of(st.binary(max_size=300), imap_ish)


def drive(data: bytes, cuts: list[int], reader: CommandReader):
    """Feed ``data`` split at ``cuts`` with a deterministic policy; return events."""
    out = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for lo, hi in itertools.pairwise(points):
        for ev in reader.feed(data[lo:hi]):
            out.append(ev)
            if isinstance(ev, LiteralAnnounced):
                if ev.size <= 8:
                    reader.accept_literal()
                else:
                    reader.reject_literal("no")
            elif isinstance(ev, RawCommand):
                try:
                    cmd = parse_command(ev)
                except ParseError as exc:
                    assert isinstance(exc.message, str) and exc.message
                    continue
                if cmd.name == "IDLE":
                    reader.expect_done()
                elif cmd.name == "AUTHENTICATE":
                    reader.expect_line()
        assert len(out) <= 4 * len(data) + 4  # progress, no runaway
    return out


@FAST
@given(data=any_input, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_prop_reader_arbitrary_input_only_module_errors(data, cuts):
    whole = drive(data, [], CommandReader(max_line_length=40, max_literal_size=16))
    chunked = drive(data, cuts, CommandReader(max_line_length=40, max_literal_size=16))
    # Chunking never changes the result.
    assert whole == chunked


@FAST
@given(data=any_input)
def test_prop_parse_arbitrary_bytes(data):
    for candidate in (data, b"a " + data, b"a UID " + data, b"a FETCH 1 " + data, b"a SEARCH " + data):
        try:
            parse_command(candidate)
        except ParseError as exc:
            assert exc.message
    with contextlib.suppress(ParseError):
        parse_values(data)


@FAST
@given(text=st.text(max_size=30) | st.binary(max_size=30))
def test_prop_small_parsers_only_raise_parse_error(text):
    for fn in (SequenceSet.parse, decode_mutf7, parse_imap_date, parse_imap_datetime):
        with contextlib.suppress(ParseError):
            fn(text)


values = st.recursive(
    st.none()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.integers(0, 2**32)
    | st.builds(LiteralData, st.binary(max_size=6))
    | st.from_regex(r"\A[A-Za-z$][A-Za-z0-9.$-]{0,8}\Z").filter(lambda s: s.upper() != "NIL").map(Atom),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


def norm(v):
    """Normalise a value for comparison: strings vs atoms, lists vs tuples."""
    if v is None:
        return None
    if isinstance(v, (Atom, int)) and not isinstance(v, bool):
        return ("atom", str(v))
    if isinstance(v, str):
        return ("string", v.encode("utf-8"))
    if isinstance(v, bytes):
        return ("string", bytes(v))
    return tuple(norm(x) for x in v)


@FAST
@given(items=st.lists(values, min_size=1, max_size=4))
def test_prop_serialise_parse_roundtrip(items):
    wire = b" ".join(encode_value(v) for v in items)
    assert norm(parse_values(wire)) == norm(items)


@FAST
@given(user=st.text(max_size=20), password=st.text(max_size=2000))
def test_prop_astring_roundtrip_through_reader(user, password):
    wire = b"a LOGIN " + astring(user) + b" " + astring(password) + b"\r\n"
    events, _ = run_reader([wire])
    (raw,) = commands(events)
    assert parse_command(raw).args == LoginArgs(user, password)


@FAST
@given(name=st.text(max_size=20))
def test_prop_mailbox_roundtrip_via_select(name):
    assert args(b"a SELECT " + encode_mailbox(name)) == SelectArgs(normalize_mailbox(name))


@FAST
@given(name=st.text(max_size=30))
def test_prop_mutf7_roundtrip(name):
    encoded = encode_mutf7(name)
    assert encoded.isascii() and all(" " <= c <= "~" for c in encoded)
    assert decode_mutf7(encoded) == name
    assert encode_mutf7(decode_mutf7(encoded)) == encoded


endpoint = st.none() | st.integers(1, 60)


@FAST
@given(ranges=st.lists(st.tuples(endpoint, endpoint), min_size=1, max_size=6), largest=st.integers(0, 70))
def test_prop_sequence_set_matches_brute_force(ranges, largest):
    s = SequenceSet(tuple(ranges))
    assert SequenceSet.parse(str(s)) == s
    expected: set[int] = set()
    for a, b in ranges:
        if largest == 0 and (a is None or b is None):
            continue
        lo, hi = sorted((largest if a is None else a, largest if b is None else b))
        expected |= {n for n in range(lo, hi + 1) if 1 <= n <= largest}
    assert s.resolve(largest) == sorted(expected)
    assert [n for n in range(0, 75) if s.contains(n, largest)] == sorted(expected)


@FAST
@given(numbers=st.sets(st.integers(1, 200), min_size=1, max_size=40))
def test_prop_format_sequence_set(numbers):
    text = format_sequence_set(numbers)
    assert SequenceSet.parse(text).resolve(max(numbers)) == sorted(numbers)
    # Compact: no two adjacent runs could have been merged.
    assert text.count(",") + 1 == len(SequenceSet.parse(text).intervals(max(numbers)))


@FAST
@given(dt=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                       timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7)),
                                                  timezone(timedelta(hours=5, minutes=45))])))
def test_prop_internaldate_roundtrip(dt):
    assert parse_imap_datetime(imap_date(dt)) == dt.replace(microsecond=0)


@pytest.mark.parametrize("line", [b'a SELECT "&Jjo"', b"a LIST \"\" &-&", b'a APPEND "&AGE-" {1}\r\nx', b"a RENAME x &abc"])
def test_broken_modified_utf7_is_a_distinct_parse_error(line):
    """Servers answer NO (or an empty LIST), not BAD, for names that cannot exist (RFC 3501 §5.1.3)."""
    with pytest.raises(InvalidMailboxName) as info:
        parse_command(line)
    assert isinstance(info.value, ParseError) and info.value.code == "CANNOT"
    assert info.value.tag == "a" and info.value.command in ("SELECT", "LIST", "APPEND", "RENAME")
