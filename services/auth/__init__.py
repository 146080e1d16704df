"""Auth service: accounts, rotating refresh tokens, ES256 access tokens, phone verification, rate limits."""
