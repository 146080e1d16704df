"""Concrete I/O: PostgreSQL tables and repository, SMTP, SMS providers."""
