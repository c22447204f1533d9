"""``meshproxy viz``: stat, routes and edges, from the proxies' own /metrics or from Prometheus.

Imported only by ``meshproxy viz`` (never by ``meshproxy run``): ``command``
parses the arguments; ``promql`` is the arithmetic (increase, rate,
histogram_quantile as PromQL does them); ``query`` the few query shapes the
commands need, evaluated over scraped samples (``embedded``) or sent to a
Prometheus server (``prometheus``); ``stat``, ``routes`` and ``edges`` build
the tables; ``table`` prints them as Linkerd does.
"""
