"""Tests for proxy.protocol, the sans-IO codecs: one test module per codec module."""
