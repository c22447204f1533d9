"""A small authoritative DNS server for tests: UDP on 127.0.0.1, records changed at runtime.

Built on dnspython's message API. Names not in the table get NXDOMAIN, known
names asked for a missing type get NODATA, both with an SOA (TTL 1 s) for
negative caching. ``mode`` simulates trouble: ``"servfail"`` answers SERVFAIL,
``"drop"`` never answers (the server is down).
"""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

TTL = 1
SOA = "ns.test. admin.test. 1 60 60 60 1"


class FakeDns(asyncio.DatagramProtocol):
    def __init__(self, ttl: int = TTL) -> None:
        self.ttl = ttl
        self.records: dict[tuple[dns.name.Name, int], list[str]] = {}
        self.mode = "ok"
        self.queries = 0
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    def set(self, name: str, rdtype: str, values: list[str]) -> None:
        key = (dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
        if values:
            self.records[key] = list(values)
        else:
            self.records.pop(key, None)

    def remove(self, name: str) -> None:
        qname = dns.name.from_text(name)
        for key in [k for k in self.records if k[0] == qname]:
            del self.records[key]

    async def start(self) -> FakeDns:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        self.queries += 1
        reply = self.answer(data)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def answer(self, wire: bytes) -> bytes | None:
        if self.mode == "drop":
            return None
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        values = self.records.get((question.name, question.rdtype))
        if values:
            response.answer.append(dns.rrset.from_text_list(question.name, self.ttl, "IN", question.rdtype, values))
        else:
            if not any(name == question.name for name, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text("test.", self.ttl, "IN", "SOA", SOA))
        return response.to_wire()
