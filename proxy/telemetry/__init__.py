"""Metrics in Prometheus text format (Linkerd's names and labels) and structured logging."""
