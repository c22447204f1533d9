"""Real apps and client drivers for tests/integration/test_real_clients.py (Node, Go, Python servers)."""
