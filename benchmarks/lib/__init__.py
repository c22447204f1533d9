"""Shared machinery of the benchmark runner: processes, tools, machine facts, reports.

Scenarios (``benchmarks/scenarios/``) compose these; nothing here knows about a
particular scenario.
"""
