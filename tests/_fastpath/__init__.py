"""Tests for proxy._fastpath, one module per fast-path module."""
