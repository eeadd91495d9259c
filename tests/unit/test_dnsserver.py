"""Tests for the loopback DNS server in tests/support/dnsserver.py.

Everything goes over real sockets: dnspython's stub resolver and low-level
dns.query calls, plus pyspf and dkimpy resolving through the server.
"""

import base64
import os
import socket
import struct
import threading

import dkim
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
import spf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from support.dnsserver import DNSServer


@pytest.fixture
def server():
    with DNSServer() as srv:
        yield srv


@pytest.fixture
def resolver(server):
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = server.port
    res.lifetime = 3
    return res


def ask(server, name, rtype, *, tcp=False, **make_query_args):
    """Send one raw query and return the parsed response."""
    query = dns.message.make_query(name, rtype, **make_query_args)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=server.port, timeout=3)


# --- lifecycle -------------------------------------------------------------


def test_listens_on_udp_and_tcp_on_the_same_port(server):
    server.add("example.test", "A", "192.0.2.1")
    assert server.address == f"127.0.0.1:{server.port}"
    for tcp in (False, True):
        reply = ask(server, "example.test", "A", tcp=tcp)
        assert reply.answer[0][0].address == "192.0.2.1"


def test_stop_closes_sockets_and_threads():
    srv = DNSServer().start()
    port = srv.port
    srv.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("dns-") and
                t.name.endswith(f"-{port}")]
    # Both ports are free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    srv.stop()  # a second stop is harmless


def test_stop_with_an_idle_tcp_client_connected():
    srv = DNSServer().start()
    srv.add("example.test", "A", "192.0.2.1")
    client = socket.create_connection(("127.0.0.1", srv.port), timeout=3)
    try:
        # One exchange first, so the connection is surely accepted and served.
        query = dns.message.make_query("example.test", "A").to_wire()
        client.sendall(struct.pack("!H", len(query)) + query)
        assert dns.message.from_wire(_read_frame(client)).answer
        srv.stop()  # must not wait for the client to hang up
        assert client.recv(10) == b""  # server side closed cleanly
    finally:
        client.close()


def test_two_servers_get_different_ports():
    with DNSServer() as one, DNSServer() as two:
        assert one.port != two.port


# --- basic answers ---------------------------------------------------------


def test_header_echoes_id_question_and_rd_and_sets_aa(server):
    server.add("example.test", "A", "192.0.2.1")
    query = dns.message.make_query("example.test", "A")
    query.flags |= dns.flags.RD
    reply = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    assert reply.id == query.id
    assert reply.question == query.question
    assert reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.RD
    assert reply.flags & dns.flags.QR

    query.flags &= ~dns.flags.RD
    reply = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    assert not reply.flags & dns.flags.RD


def test_a_aaaa_and_mx(server, resolver):
    server.add("example.test", "MX", "10 mx1.example.test")
    server.add("example.test", "MX", "20 mx2.example.test.", ttl=300)
    server.add("mx1.example.test", "A", "192.0.2.25")
    server.add("mx1.example.test", "AAAA", "2001:db8::25")

    mx = resolver.resolve("example.test", "MX")
    assert sorted((r.preference, r.exchange.to_text()) for r in mx) == [
        (10, "mx1.example.test."),
        (20, "mx2.example.test."),
    ]
    assert mx.rrset.ttl == 60  # one RRset, smallest TTL
    assert [r.address for r in resolver.resolve("mx1.example.test", "A")] == ["192.0.2.25"]
    assert [r.address for r in resolver.resolve("mx1.example.test", "AAAA")] == ["2001:db8::25"]


def test_ptr_lookup(server, resolver):
    server.add("1.0.0.127.in-addr.arpa", "PTR", "mail.example.test")
    answer = resolver.resolve_address("127.0.0.1")
    assert answer[0].target.to_text() == "mail.example.test."


def test_names_are_case_insensitive_and_trailing_dot_optional(server, resolver):
    server.add("Mail.Example.TEST.", "A", "192.0.2.7")
    assert resolver.resolve("mail.example.test", "A")[0].address == "192.0.2.7"
    assert resolver.resolve("MAIL.example.test.", "a")[0].address == "192.0.2.7"
    server.remove("mail.EXAMPLE.test")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("mail.example.test", "A")


def test_adding_the_same_record_twice_keeps_one(server, resolver):
    server.add("example.test", "A", "192.0.2.1")
    server.add("example.test", "A", "192.0.2.1")
    assert len(resolver.resolve("example.test", "A")) == 1


# --- TXT -------------------------------------------------------------------


def test_short_txt(server, resolver):
    server.add("example.test", "TXT", "v=spf1 -all")
    answer = resolver.resolve("example.test", "TXT")
    assert answer[0].strings == (b"v=spf1 -all",)


def test_long_txt_is_split_into_255_byte_strings(server, resolver):
    value = "".join(chr(ord("a") + i % 26) for i in range(600))
    server.add("long.example.test", "TXT", value)
    answer = resolver.resolve("long.example.test", "TXT", tcp=True)
    strings = answer[0].strings
    assert [len(s) for s in strings] == [255, 255, 90]
    assert b"".join(strings).decode() == value


def test_explicit_txt_strings(server, resolver):
    server.add("example.test", "TXT", ["part one", "part two"])
    assert resolver.resolve("example.test", "TXT")[0].strings == (b"part one", b"part two")


def test_big_udp_answer_without_edns_is_truncated_and_retried_over_tcp(server, resolver):
    value = "k" * 600
    server.add("long.example.test", "TXT", value)

    # A plain (non-EDNS) UDP query is capped at 512 bytes: TC, empty answer.
    reply = ask(server, "long.example.test", "TXT")
    assert reply.flags & dns.flags.TC
    assert reply.answer == []
    assert reply.edns == -1

    # The stub resolver (EDNS off, the dnspython default) retries over TCP.
    resolver.use_edns(-1)
    server.reset_queries()
    answer = resolver.resolve("long.example.test", "TXT")
    assert b"".join(answer[0].strings).decode() == value
    assert server.queries == [("long.example.test", "TXT")] * 2  # UDP, then TCP


def test_edns_payload_is_honoured(server, resolver):
    server.add("long.example.test", "TXT", "k" * 600)

    reply = ask(server, "long.example.test", "TXT", use_edns=0, payload=1232)
    assert not reply.flags & dns.flags.TC
    assert reply.edns == 0  # OPT echoed back
    assert len(reply.answer[0][0].strings) == 3

    # An EDNS client advertising a small buffer still gets truncated.
    reply = ask(server, "long.example.test", "TXT", use_edns=0, payload=512)
    assert reply.flags & dns.flags.TC
    assert reply.edns == 0

    resolver.use_edns(0, 0, 1232)
    server.reset_queries()
    resolver.resolve("long.example.test", "TXT")
    assert server.queries == [("long.example.test", "TXT")]  # no TCP retry needed


def test_no_opt_in_reply_without_edns_query(server):
    server.add("example.test", "A", "192.0.2.1")
    assert ask(server, "example.test", "A").edns == -1


@settings(max_examples=40, deadline=None)
@given(value=st.text(max_size=700))
def test_any_txt_value_round_trips(value):
    # One server for all examples; a fixture would be reset by hypothesis.
    srv = _shared_server()
    srv.set("rt.example.test", "TXT", [value])
    reply = ask(srv, "rt.example.test", "TXT", tcp=True)
    assert b"".join(reply.answer[0][0].strings) == value.encode()


_SHARED = []


def _shared_server():
    if not _SHARED:
        _SHARED.append(DNSServer().start())
    return _SHARED[0]


@pytest.fixture(scope="module", autouse=True)
def _stop_shared_server():
    yield
    while _SHARED:
        _SHARED.pop().stop()


# --- negative answers ------------------------------------------------------


def test_nxdomain_versus_nodata(server, resolver):
    server.add("example.test", "A", "192.0.2.1")

    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.example.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("example.test", "MX")


def test_negative_answers_carry_an_soa(server):
    server.add("example.test", "A", "192.0.2.1")

    nx = ask(server, "nope.example.test", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.flags & dns.flags.AA
    (soa,) = nx.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name.to_text() == "example.test."
    assert soa[0].minimum == 0

    nodata = ask(server, "example.test", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_test_supplied_soa_is_used_for_negative_answers(server):
    server.add("example.test", "SOA", "ns1.example.test. admin.example.test. 7 1 1 1 30")
    reply = ask(server, "a.b.example.test", "A")
    assert reply.authority[0].name.to_text() == "example.test."
    assert reply.authority[0][0].serial == 7


def test_empty_non_terminal_is_nodata(server, resolver):
    server.add("sel._domainkey.example.test", "TXT", "v=DKIM1; p=")
    reply = ask(server, "_domainkey.example.test", "TXT")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []


# --- CNAME -----------------------------------------------------------------


def test_cname_chain_is_followed(server, resolver):
    server.add("www.example.test", "CNAME", "web.example.test")
    server.add("web.example.test", "CNAME", "host.example.test")
    server.add("host.example.test", "A", "192.0.2.80")

    answer = resolver.resolve("www.example.test", "A")
    assert answer[0].address == "192.0.2.80"
    assert answer.canonical_name.to_text() == "host.example.test."

    reply = ask(server, "www.example.test", "A")
    assert [r.rdtype for r in reply.answer] == [
        dns.rdatatype.CNAME, dns.rdatatype.CNAME, dns.rdatatype.A,
    ]

    # Asking for the CNAME itself does not chase it.
    reply = ask(server, "www.example.test", "CNAME")
    assert len(reply.answer) == 1


def test_cname_to_missing_target_is_nxdomain(server):
    server.add("alias.example.test", "CNAME", "gone.example.test")
    reply = ask(server, "alias.example.test", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME


def test_cname_loop_does_not_hang(server):
    server.add("a.example.test", "CNAME", "b.example.test")
    server.add("b.example.test", "CNAME", "a.example.test")
    reply = ask(server, "a.example.test", "A")
    assert len(reply.answer) == 2


# --- live changes ----------------------------------------------------------


def test_set_remove_and_clear_are_seen_immediately(server, resolver):
    server.add("example.test", "A", "192.0.2.1")
    server.add("example.test", "TXT", "hello")
    assert resolver.resolve("example.test", "A")[0].address == "192.0.2.1"

    server.set("example.test", "A", ["192.0.2.2", "192.0.2.3"])
    assert sorted(r.address for r in resolver.resolve("example.test", "A")) == [
        "192.0.2.2", "192.0.2.3",
    ]

    server.remove("example.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("example.test", "A")
    assert resolver.resolve("example.test", "TXT")[0].strings == (b"hello",)

    server.set("example.test", "TXT", [])
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("example.test", "TXT")

    server.add("example.test", "A", "192.0.2.9")
    server.clear()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("example.test", "A")


def test_query_log(server, resolver):
    server.add("example.test", "MX", "10 mx.example.test")
    resolver.resolve("Example.Test", "MX")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nope.example.test", "A")
    assert server.queries == [("example.test", "MX"), ("nope.example.test", "A")]
    server.reset_queries()
    assert server.queries == []


# --- robustness ------------------------------------------------------------


def test_garbage_udp_is_ignored(server, resolver):
    server.add("example.test", "A", "192.0.2.1")
    junk = [
        b"",
        b"\x00",
        b"\xff" * 11,  # shorter than a header
        os.urandom(512),
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0",  # bad name pointer
    ]
    # A response (QR set) sent to the server must not be answered either.
    reply_like = dns.message.make_response(dns.message.make_query("x.test", "A"))
    junk.append(reply_like.to_wire())

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        for packet in junk:
            sock.sendto(packet, ("127.0.0.1", server.port))
        with pytest.raises(socket.timeout):
            sock.recvfrom(4096)

    assert resolver.resolve("example.test", "A")[0].address == "192.0.2.1"


def test_garbage_tcp_frame_is_ignored(server):
    server.add("example.test", "A", "192.0.2.1")
    good = dns.message.make_query("example.test", "A").to_wire()
    junk = os.urandom(40)
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        sock.sendall(struct.pack("!H", len(junk)) + junk + struct.pack("!H", len(good)) + good)
        reply = dns.message.from_wire(_read_frame(sock))
    assert reply.answer[0][0].address == "192.0.2.1"


def test_several_queries_on_one_tcp_connection(server):
    server.add("one.example.test", "A", "192.0.2.1")
    server.add("two.example.test", "A", "192.0.2.2")
    queries = [dns.message.make_query(f"{n}.example.test", "A") for n in ("one", "two")]
    wire = b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in queries))
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        # Pipelined in one write, then a third query split across two writes.
        sock.sendall(wire)
        replies = [dns.message.from_wire(_read_frame(sock)) for _ in queries]
        third = dns.message.make_query("one.example.test", "A").to_wire()
        framed = struct.pack("!H", len(third)) + third
        sock.sendall(framed[:5])
        sock.sendall(framed[5:])
        replies.append(dns.message.from_wire(_read_frame(sock)))
    assert [r.answer[0][0].address for r in replies] == ["192.0.2.1", "192.0.2.2", "192.0.2.1"]


def _read_frame(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed early"
            data += chunk
        return data

    (size,) = struct.unpack("!H", exactly(2))
    return exactly(size)


# --- pyspf and dkimpy ------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyspf uses dns.resolver.query
def test_spf_through_the_server(server, monkeypatch):
    server.add("example.test", "TXT", "v=spf1 mx ip4:198.51.100.0/24 -all")
    server.add("example.test", "MX", "10 mx.example.test")
    server.add("mx.example.test", "A", "192.0.2.25")
    # pyspf resolves through dnspython's module-level default resolver.
    monkeypatch.setattr(dns.resolver, "default_resolver", server.resolver())

    for ip in ("192.0.2.25", "198.51.100.7"):
        result, _ = spf.check2(i=ip, s="alice@example.test", h="mx.example.test")
        assert result == "pass", ip
    result, _ = spf.check2(i="203.0.113.5", s="alice@example.test", h="mx.example.test")
    assert result == "fail"
    assert ("example.test", "TXT") in server.queries


def test_dkim_verify_through_the_server(server):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode()
    assert len(record) > 255  # must travel as several character-strings
    server.add("sel._domainkey.example.test", "TXT", record)

    message = (
        b"From: Alice <alice@example.test>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: hello\r\n"
        b"\r\n"
        b"Signed and verified through the test DNS server.\r\n"
    )
    signature = dkim.sign(message, b"sel", b"example.test", private_pem,
                          include_headers=[b"from", b"to", b"subject"])
    signed = signature + message

    def dnsfunc(name, timeout=5):
        try:
            answer = server.resolver().resolve(name.decode(), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)

    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert ("sel._domainkey.example.test", "TXT") in server.queries

    # Once the key is withdrawn, verification fails.
    server.remove("sel._domainkey.example.test")
    assert not dkim.verify(signed, dnsfunc=dnsfunc)
