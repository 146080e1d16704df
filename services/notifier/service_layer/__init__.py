"""Use cases: apply events, decide due work, deliver it."""
