"""The latency scenario's report parts (benchmarks/scenarios/latency.py), without running a benchmark."""

from __future__ import annotations

from benchmarks.lib.compare import Contender, Sample
from benchmarks.scenarios import latency


def test_the_latency_notes_put_meshproxy_p999_beside_haproxy_and_say_why_not_when_one_failed():
    def contender(name: str, *p999: float) -> Contender:
        return Contender(name, rounds=[Sample(i, True, metrics={"p999_ms": v}) for i, v in enumerate(p999)])

    mine, ha = contender("meshproxy", 4.0, 5.0, 9.0), contender("haproxy", 4.0, 4.0, 1.0)
    assert latency.tail_note([ha, mine], 5000.0) == (
        "p99.9 at 5,000 req/s: meshproxy 5.000 ms, HAProxy 4.000 ms, 1.25x (lower is better)")
    ha.rounds.append(Sample(3, False, "read error"))
    assert latency.tail_note([ha, mine], 1000.0) == "p99.9 at 1,000 req/s: n/a (round 3: read error)"
    assert latency.tail_note([mine], 1000.0).endswith("n/a (meshproxy or HAProxy not run)")
