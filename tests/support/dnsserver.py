"""A small authoritative DNS server on loopback, for tests.

The server answers from an in-memory zone that the test fills in, over both
UDP and TCP on the same ephemeral port, so every piece of code under test
resolves names through real DNS packets:

    with DNSServer() as dns_server:
        dns_server.add("example.test", "MX", "10 mx.example.test")
        dns_server.add("mx.example.test", "A", "127.0.0.1")
        dns_server.add("example.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
        ...

Every name in the DNS is treated as belonging to the zone: a name with no
records (and no records below it) gets NXDOMAIN, a name that has records of
other types gets an empty NOERROR (NODATA).  Negative answers carry a
synthetic SOA with a zero TTL so that nothing caches them for long.

Pointing clients at the server
------------------------------

* The mail daemon (a subprocess): put ``dns_server.address`` (for example
  ``"127.0.0.1:40123"``) into its ``dns_nameservers`` setting.

* dnspython in the test process: ``dns_server.resolver()`` returns a
  ``dns.resolver.Resolver(configure=False)`` already aimed at the server.
  By hand it is::

      resolver = dns.resolver.Resolver(configure=False)
      resolver.nameservers = ["127.0.0.1"]
      resolver.port = dns_server.port

* pyspf: it has no nameserver option; its lookups go through
  ``dns.resolver.query()``, i.e. dnspython's module-level default resolver.
  Swap that resolver for the duration of the test::

      monkeypatch.setattr(dns.resolver, "default_resolver", dns_server.resolver())
      result, explanation = spf.check2(i="127.0.0.1", s="a@example.test",
                                       h="mx.example.test")

  (Replacing ``spf.DNSLookup`` with an own function also works, but then
  the function has to mimic pyspf's private return format.)

* dkimpy: ``dkim.verify()`` accepts ``dnsfunc(name: bytes, timeout=5)``
  which must return the joined TXT record as bytes, or None::

      def dnsfunc(name, timeout=5):
          try:
              answer = dns_server.resolver().resolve(name.decode(), "TXT",
                                                     lifetime=timeout)
          except dns.exception.DNSException:
              return None
          return b"".join(answer[0].strings)

      assert dkim.verify(message, dnsfunc=dnsfunc)

  Patching ``dns.resolver.default_resolver`` as for pyspf also works, since
  dkimpy's own default lookup uses ``dns.resolver.resolve()``.

Query log
---------

``dns_server.queries`` is a snapshot list of ``(name, rtype)`` tuples, one
per question received, with the name lower-cased and without a trailing dot,
e.g. ``("example.test", "MX")``.  ``reset_queries()`` empties it.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.resolver
import dns.rrset

log = logging.getLogger(__name__)

IN = dns.rdataclass.IN
# Plain DNS over UDP is limited to 512 bytes unless the client uses EDNS0.
CLASSIC_UDP_LIMIT = 512
# The UDP payload size this server advertises in its own OPT record.
OUR_EDNS_PAYLOAD = 1232
# Upper bound on CNAME hops followed inside the zone (guards against loops).
MAX_CNAME_HOPS = 16
# A TXT character-string holds at most 255 bytes.
TXT_CHUNK = 255


def _name(name: str | dns.name.Name) -> dns.name.Name:
    """Turn "Example.Test" or "example.test." into an absolute dns.name.Name."""
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.concatenate(dns.name.root)
    return dns.name.from_text(name, origin=dns.name.root)


def _rdtype(rtype: str | int) -> dns.rdatatype.RdataType:
    if isinstance(rtype, str):
        rtype = rtype.upper()
    return dns.rdatatype.RdataType.make(rtype)


def _rdata(rdtype: dns.rdatatype.RdataType, value) -> dns.rdata.Rdata:
    """Build one record's data from the test-friendly value given to add()/set()."""
    if isinstance(value, dns.rdata.Rdata):
        return value
    if rdtype == dns.rdatatype.TXT:
        # A str/bytes value is one logical string, cut into 255-byte pieces
        # (long DKIM keys need several); a list gives the pieces explicitly.
        if isinstance(value, (str, bytes)):
            data = value.encode() if isinstance(value, str) else value
            chunks = [data[i:i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)]
        else:
            chunks = [v.encode() if isinstance(v, str) else v for v in value]
        return dns.rdtypes.ANY.TXT.TXT(IN, rdtype, chunks or [b""])
    # Everything else uses master-file syntax; names inside it are absolute.
    return dns.rdata.from_text(
        IN, rdtype, str(value), origin=dns.name.root, relativize=False
    )


def _display(name: dns.name.Name) -> str:
    """Name as recorded in the query log: lower case, no trailing dot."""
    return name.to_text(omit_final_dot=True).lower()


class DNSServer:
    """Authoritative DNS server for tests; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port: int | None = None
        # zone: owner name -> record type -> {rdata: ttl}
        self._zone: dict[dns.name.Name, dict[int, dict[dns.rdata.Rdata, int]]] = {}
        self._serial = 1  # bumped on every change; shows up in synthetic SOAs
        self._lock = threading.Lock()
        self._queries: list[tuple[str, str]] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._threads: list[threading.Thread] = []  # the UDP and accept loops
        self._conns: dict[socket.socket, threading.Thread] = {}  # open TCP clients

    # ------------------------------------------------------------------
    # lifecycle

    @property
    def address(self) -> str:
        """The "host:port" form used by the daemon's dns_nameservers setting."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> DNSServer:
        if self._udp is not None:
            raise RuntimeError("DNSServer already started")
        self._udp, self._tcp = self._bind_pair()
        self.port = self._udp.getsockname()[1]
        # Writing one byte to this pair wakes every serving thread at once:
        # they all wait on the read end and it is never drained.
        self._wake_r, self._wake_w = socket.socketpair()
        for target, label in ((self._serve_udp, "udp"), (self._serve_tcp, "tcp")):
            thread = threading.Thread(
                target=target, name=f"dns-{label}-{self.port}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        if self._udp is None:
            return
        self._wake_w.send(b"x")
        # The accept loop is gone once joined, so no new connections appear
        # while the per-connection threads are being collected.
        for thread in self._threads:
            thread.join(timeout=5)
        with self._lock:
            conns = dict(self._conns)
        for thread in conns.values():
            thread.join(timeout=5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w, *conns):
            sock.close()
        self._threads.clear()
        self._conns.clear()
        self._udp = self._tcp = self._wake_r = self._wake_w = None

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _bind_pair(self) -> tuple[socket.socket, socket.socket]:
        """Bind UDP to a free port, then TCP to the same one; retry on clashes."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, udp.getsockname()[1]))
            except OSError as exc:
                udp.close()
                tcp.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            tcp.listen(16)
            return udp, tcp
        raise RuntimeError("no port free for both UDP and TCP")

    def _selector(self, sock: socket.socket) -> selectors.BaseSelector:
        """A selector watching sock and the shared stop signal."""
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        return sel

    def _wait_readable(self, sel: selectors.BaseSelector) -> bool:
        """Block until the watched socket is readable (True) or stop() runs (False)."""
        while True:
            ready = {key.fileobj for key, _ in sel.select()}
            if self._wake_r in ready:
                return False
            if ready:
                return True

    # ------------------------------------------------------------------
    # zone editing

    def add(self, name: str, rtype: str, value, ttl: int = 60) -> None:
        """Add one record (adding an identical one again only updates its TTL)."""
        rdtype = _rdtype(rtype)
        rdata = _rdata(rdtype, value)
        with self._lock:
            self._zone.setdefault(_name(name), {}).setdefault(rdtype, {})[rdata] = ttl
            self._serial += 1

    def set(self, name: str, rtype: str, values: Iterable, ttl: int = 60) -> None:
        """Replace all records of one type at a name; an empty list removes them."""
        rdtype = _rdtype(rtype)
        records = {_rdata(rdtype, value): ttl for value in values}
        owner = _name(name)
        with self._lock:
            node = self._zone.setdefault(owner, {})
            if records:
                node[rdtype] = records
            else:
                node.pop(rdtype, None)
            if not node:
                del self._zone[owner]
            self._serial += 1

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove one type of record at a name, or the whole name."""
        owner = _name(name)
        with self._lock:
            node = self._zone.get(owner)
            if node is None:
                return
            if rtype is None:
                node.clear()
            else:
                node.pop(_rdtype(rtype), None)
            if not node:
                del self._zone[owner]
            self._serial += 1

    def clear(self) -> None:
        """Empty the zone (the query log is kept)."""
        with self._lock:
            self._zone.clear()
            self._serial += 1

    # ------------------------------------------------------------------
    # helpers for tests

    @property
    def queries(self) -> list[tuple[str, str]]:
        """Snapshot of the (name, rtype) questions received so far."""
        with self._lock:
            return list(self._queries)

    def reset_queries(self) -> None:
        with self._lock:
            self._queries.clear()

    def resolver(self, lifetime: float = 5.0) -> dns.resolver.Resolver:
        """A fresh dnspython resolver that asks only this server."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = lifetime
        return resolver

    # ------------------------------------------------------------------
    # serving

    def _serve_udp(self) -> None:
        with self._selector(self._udp) as sel:
            while self._wait_readable(sel):
                try:
                    data, peer = self._udp.recvfrom(65535)
                except OSError:
                    continue
                wire = self._handle(data, tcp=False)
                if wire is not None:
                    try:
                        self._udp.sendto(wire, peer)
                    except OSError:
                        pass

    def _serve_tcp(self) -> None:
        with self._selector(self._tcp) as sel:
            while self._wait_readable(sel):
                try:
                    conn, _ = self._tcp.accept()
                except OSError:
                    continue
                conn.settimeout(10)  # bounds sends; reads wait in the selector
                thread = threading.Thread(
                    target=self._serve_conn, args=(conn,),
                    name=f"dns-conn-{self.port}", daemon=True,
                )
                with self._lock:
                    self._conns[conn] = thread
                thread.start()

    def _serve_conn(self, conn: socket.socket) -> None:
        """Answer length-prefixed queries on one TCP connection until it closes."""
        buffer = b""
        try:
            with self._selector(conn) as sel:
                while self._wait_readable(sel):
                    chunk = conn.recv(65537)
                    if not chunk:
                        return
                    buffer += chunk
                    # Several queries may arrive back to back, or one in pieces.
                    while len(buffer) >= 2:
                        (size,) = struct.unpack("!H", buffer[:2])
                        if len(buffer) < 2 + size:
                            break
                        message, buffer = buffer[2:2 + size], buffer[2 + size:]
                        wire = self._handle(message, tcp=True)
                        if wire is not None:
                            conn.sendall(struct.pack("!H", len(wire)) + wire)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            conn.close()

    @staticmethod
    def _size_limit(query: dns.message.Message, tcp: bool) -> int:
        """Largest reply the client accepts (RFC 6891: UDP never below 512)."""
        if tcp:
            return 65535
        if query.edns < 0:
            return CLASSIC_UDP_LIMIT
        return min(max(query.payload, CLASSIC_UDP_LIMIT), 65535)

    def _handle(self, data: bytes, tcp: bool) -> bytes | None:
        """Wire query in, wire reply out; None means "stay silent"."""
        try:
            query = dns.message.from_wire(data)
        except Exception:  # garbage, truncated packets, bad TSIG, ...
            return None
        if query.flags & dns.flags.QR:
            return None  # a response sent to us; never answer those
        try:
            response = self._respond(query)
            limit = self._size_limit(query, tcp)
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                # Keep only the question (and OPT) and flag the truncation so
                # the client repeats the query over TCP.
                response.answer, response.authority, response.additional = [], [], []
                response.flags |= dns.flags.TC
                return response.to_wire(max_size=limit)
        except Exception:
            log.exception("DNSServer failed to answer a query")
            try:
                response = dns.message.make_response(query)
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()
            except Exception:
                return None

    def _respond(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=OUR_EDNS_PAYLOAD)
        response.flags |= dns.flags.AA
        with self._lock:
            for question in query.question:
                self._queries.append(
                    (_display(question.name), dns.rdatatype.to_text(question.rdtype))
                )
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
        elif query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        elif query.question[0].rdclass not in (IN, dns.rdataclass.ANY):
            response.set_rcode(dns.rcode.REFUSED)
        else:
            question = query.question[0]
            with self._lock:
                self._answer(response, question.name, question.rdtype)
        return response

    def _answer(self, response: dns.message.Message, qname: dns.name.Name,
                rdtype: int) -> None:
        """Fill in answer/authority and rcode.  Caller holds the lock."""
        name = qname
        seen = set()
        while True:
            node = self._zone.get(name)
            if node is None:
                if not self._has_descendants(name):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                break  # NXDOMAIN, or an empty non-terminal (NODATA)
            if rdtype == dns.rdatatype.ANY:
                for rtype in node:
                    response.answer.append(self._rrset(name, rtype, node[rtype]))
                return
            if rdtype in node:
                response.answer.append(self._rrset(name, rdtype, node[rdtype]))
                return
            cname = node.get(dns.rdatatype.CNAME)
            if not cname or len(seen) >= MAX_CNAME_HOPS:
                break  # NODATA (or a chain too long to chase further)
            # Alias: hand back the CNAME and carry on with its target.
            seen.add(name)
            response.answer.append(self._rrset(name, dns.rdatatype.CNAME, cname))
            name = next(iter(cname)).target
            if name in seen:
                return  # CNAME loop; the client will notice
        response.authority.append(self._soa_for(name))

    def _has_descendants(self, name: dns.name.Name) -> bool:
        # A name with records somewhere below it exists even if it has none
        # of its own (an "empty non-terminal"), so it is NODATA, not NXDOMAIN.
        return any(owner != name and owner.is_subdomain(name) for owner in self._zone)

    @staticmethod
    def _rrset(name: dns.name.Name, rdtype: int,
               records: dict[dns.rdata.Rdata, int]) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(name, IN, rdtype)
        # One RRset has one TTL; use the smallest of the records' TTLs.
        rrset.update_ttl(min(records.values()))
        for rdata in records:
            rrset.add(rdata)
        return rrset

    def _soa_for(self, name: dns.name.Name) -> dns.rrset.RRset:
        """SOA for the authority section of a negative answer.

        A test-provided SOA at the name or an ancestor wins; otherwise one is
        made up for the last two labels of the name ("example.test.").  Its
        TTL and minimum are 0 so negative answers are not cached.
        """
        for depth in range(len(name.labels), 0, -1):
            apex = dns.name.Name(name.labels[-depth:])
            soa = self._zone.get(apex, {}).get(dns.rdatatype.SOA)
            if soa:
                return self._rrset(apex, dns.rdatatype.SOA, soa)
        apex = dns.name.Name(name.labels[-3:])  # two labels plus the root
        soa = dns.rdtypes.ANY.SOA.SOA(
            IN, dns.rdatatype.SOA,
            mname=dns.name.Name((b"ns",) + apex.labels),
            rname=dns.name.Name((b"hostmaster",) + apex.labels),
            serial=self._serial, refresh=3600, retry=600, expire=86400, minimum=0,
        )
        return self._rrset(apex, dns.rdatatype.SOA, {soa: 0})
