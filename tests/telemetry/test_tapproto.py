"""Linkerd's tap request read from the bytes a generated client sends: every match kind, extract, and
Linkerd's refusals (limit 0, missing or incomplete matches, bad ports, networks, methods); hostile
bytes and nesting only ever give InvalidTap."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import tapclient
from proxy.telemetry import tap
from proxy.telemetry.tapproto import MAX_DEPTH, MAX_NODES, InvalidTap, parse_observe


def _pb():
    return tapclient.modules()[0].ObserveRequest


def _parse(**kw):
    return parse_observe(_pb()(**kw).SerializeToString())


def _view(**kw):
    values = dict(src_host="10.1.2.3", src_port=40000, dst_host="10.9.9.9", dst_port=8080,
                  dst_labels={"pod": "web-1"}, route_labels={"route": "GET /books"}, scheme=None,
                  method="GET", authority="web.ns:80", path="/books/1")
    values.update(kw)
    return tap.TapView(*values.values())


def test_limit_match_and_extract():
    Req = _pb()
    spec = parse_observe(tapclient.observe_request(7, headers=True).SerializeToString())
    assert spec.limit == 7 and spec.extract_headers and isinstance(spec.match, tap.MatchAll)
    assert spec.match.matches(_view())
    assert not _parse(limit=1, match=tapclient.match_all()).extract_headers
    empty_any = Req.Match(any=Req.Match.Seq())
    assert not _parse(limit=1, match=empty_any).match.matches(_view())


@pytest.mark.parametrize("make,yes,no", [
    (lambda M: M(source=M.Tcp(netmask=M.Tcp.Netmask(ip={"ipv4": int(ipaddress.IPv4Address("10.1.0.0"))}, mask=16))),
     {}, {"src_host": "10.2.0.1"}),
    (lambda M: M(destination=M.Tcp(netmask=M.Tcp.Netmask(
        ip={"ipv6": {"first": 0xFD00 << 48, "last": 0}}, mask=8))),
     {"dst_host": "fd12::1"}, {"dst_host": "10.9.9.9"}),
    (lambda M: M(destination=M.Tcp(ports=M.Tcp.PortRange(min=8000, max=8100))), {}, {"dst_port": 9000}),
    (lambda M: M(destination=M.Tcp(ports=M.Tcp.PortRange(max=8080))), {}, {"dst_port": 8081}),
    (lambda M: M(source=M.Tcp(ports=M.Tcp.PortRange(min=40000))), {}, {"src_port": 40001}),
    (lambda M: M(destination_label=M.Label(key="pod", value="web-1")), {}, {"dst_labels": {"pod": "web-2"}}),
    (lambda M: M(destination_label=M.Label(key="pod", value="web-1")), {}, {"dst_labels": None}),
    (lambda M: M(route_label=M.Label(key="route", value="GET /books")), {}, {"route_labels": None}),
    (lambda M: M(http=M.Http(scheme={"registered": 0})), {}, {"scheme": "https"}),
    (lambda M: M(http=M.Http(scheme={"unregistered": "HTTPS"})), {"scheme": "https"}, {}),
    (lambda M: M(http=M.Http(method={"registered": 1})), {"method": "POST"}, {}),
    (lambda M: M(http=M.Http(method={"unregistered": "PURGE"})), {"method": "PURGE"}, {}),
    (lambda M: M(http=M.Http(authority=M.Http.StringMatch(exact="web.ns:80"))), {}, {"authority": "web.ns"}),
    (lambda M: M(http=M.Http(authority=M.Http.StringMatch(prefix="web."))), {}, {"authority": None}),
    (lambda M: M(http=M.Http(path=M.Http.StringMatch(prefix="/books"))), {}, {"path": "/authors"}),
    (lambda M: M(**{"not": M(http=M.Http(path=M.Http.StringMatch(exact="/x")))}), {}, {"path": "/x"}),
])
def test_each_match_kind(make, yes, no):
    Req = _pb()
    spec = _parse(limit=1, match=make(Req.Match))
    assert spec.match.matches(_view(**yes))
    if no:
        assert not spec.match.matches(_view(**no))


def test_no_destination_matches_no_destination_condition():
    M = _pb().Match
    spec = _parse(limit=1, match=M(destination=M.Tcp(ports=M.Tcp.PortRange(min=1, max=65535))))
    assert not spec.match.matches(_view(dst_host=None, dst_port=0))


@pytest.mark.parametrize("make,message", [
    (lambda R, M: R(limit=0, match=M(all=M.Seq())), "limit must be positive"),
    (lambda R, M: R(limit=1), "missing required field"),
    (lambda R, M: R(limit=1, match=M()), "missing required field"),
    (lambda R, M: R(limit=1, match=M(**{"not": M()})), "missing required field"),
    (lambda R, M: R(limit=1, match=M(source=M.Tcp())), "missing required field"),
    (lambda R, M: R(limit=1, match=M(source=M.Tcp(ports=M.Tcp.PortRange()))), "missing required field"),
    (lambda R, M: R(limit=1, match=M(source=M.Tcp(ports=M.Tcp.PortRange(min=1, max=65536)))), "invalid port"),
    (lambda R, M: R(limit=1, match=M(source=M.Tcp(netmask=M.Tcp.Netmask(mask=8)))), "missing required field"),
    (lambda R, M: R(limit=1, match=M(source=M.Tcp(netmask=M.Tcp.Netmask(ip={"ipv4": 1}, mask=33)))),
     "invalid network"),
    (lambda R, M: R(limit=1, match=M(destination_label=M.Label(key="pod"))), "label key and value"),
    (lambda R, M: R(limit=1, match=M(http=M.Http())), "missing required field"),
    (lambda R, M: R(limit=1, match=M(http=M.Http(method={"registered": 9}))), "invalid http method"),
    (lambda R, M: R(limit=1, match=M(http=M.Http(method={"unregistered": "NOT A TOKEN"}))), "invalid http method"),
    (lambda R, M: R(limit=1, match=M(http=M.Http(method={"unregistered": "X" * 16}))), "invalid http method"),
    (lambda R, M: R(limit=1, match=M(http=M.Http(scheme={"registered": 2}))), "invalid request scheme"),
    (lambda R, M: R(limit=1, match=M(http=M.Http(path=M.Http.StringMatch()))), "missing required field"),
])
def test_linkerds_refusals(make, message):
    Req = _pb()
    with pytest.raises(InvalidTap, match=message):
        parse_observe(make(Req, Req.Match).SerializeToString())


def test_nesting_and_size_are_bounded():
    M = _pb().Match
    match = tapclient.match_all()
    for _ in range(MAX_DEPTH - 1):
        match = M(**{"not": match})
    _parse(limit=1, match=match)  # at the limit: fine
    with pytest.raises(InvalidTap, match="nested deeper"):
        _parse(limit=1, match=M(**{"not": match}))
    wide = M(any=M.Seq(matches=[M(http=M.Http(path=M.Http.StringMatch(exact="/")))] * (MAX_NODES + 1)))
    with pytest.raises(InvalidTap, match="more than"):
        _parse(limit=1, match=wide)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=96))
def test_hostile_bytes_only_ever_raise_invalid_tap(data):
    try:
        spec = parse_observe(data)
    except InvalidTap:
        return
    assert spec.limit > 0
    spec.match.matches(_view())
