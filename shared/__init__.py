"""The project's kernel: settings, events, messaging, database, outbox, security, logging."""
