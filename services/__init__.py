"""The four services: auth, gateway, store, notifier."""
