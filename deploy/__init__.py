"""Local run and deployment tooling: launcher, dev mail sink, infrastructure checks, env table."""
