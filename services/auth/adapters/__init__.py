"""Concrete adapters of the auth service: tables, repositories, keys, rate-limit counters."""
