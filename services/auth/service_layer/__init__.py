"""Use cases of the auth service: each one a keyword-only async function over an ``AuthContext``."""
