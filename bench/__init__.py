"""Benchmark harness for the consultation chat: ``python -m bench`` (see docs/performance.md)."""
