"""Per-connection order: each conversation's messages reach a connection once, in ``seq`` order."""

from __future__ import annotations

from enum import Enum


class Step(Enum):
    SEND = "send"  # the next one, or the first this connection sees
    DROP = "drop"  # already sent (a replay overlapping live delivery, a redelivery)
    GAP = "gap"  # something is missing before it: fetch the gap first


def decide(last_sent: int | None, seq: int) -> Step:
    if last_sent is None or seq == last_sent + 1:
        return Step.SEND
    if seq <= last_sent:
        return Step.DROP
    return Step.GAP


def gap_too_large(last_sent: int, seq: int, replay_max: int) -> bool:
    """Beyond this the client is told to reload instead of getting a replay."""
    return seq - last_sent - 1 > replay_max
