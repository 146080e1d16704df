"""Pure notification rules: no I/O, unit-testable with plain values."""
