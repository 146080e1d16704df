"""HTTP transport of the auth service: parse, call a use case, map its errors."""
