"""Reproducible benchmarks for meshproxy: ``python benchmarks/run.py --help``."""
