"""Named crash points for tests of the ambiguous windows; inert unless configured."""

from __future__ import annotations

import os

from shared.logging import get_logger

log = get_logger(__name__)

AFTER_DECISION = "after_decision"  # decision committed, nothing claimed for sending yet
BEFORE_SEND = "before_send"  # claimed (leased) for sending, provider not called
AFTER_SEND = "after_send"  # provider accepted, acceptance not recorded
AFTER_RECORD = "after_record"  # acceptance recorded (and the notification closed), nothing after


class Failpoints:
    def __init__(self, active: str | None) -> None:
        self.active = {name.strip() for name in (active or "").split(",") if name.strip()}

    def hit(self, name: str) -> None:
        """Kill the process at once (no cleanup, like a power cut) when ``name`` is armed."""
        if name in self.active:
            log.warning("failpoint_hit", failpoint=name)
            os._exit(86)
