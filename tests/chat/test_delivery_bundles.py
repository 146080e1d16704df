"""Deliveries of one group commit travel as bundles: one publish reaching every recipient's gateway."""

from __future__ import annotations

import orjson
import pytest

from services.store.adapters.rows import bundles
from shared.commands import (
    BUNDLE_MAX_KEYS,
    DELIVERY_BUNDLE_HEADER,
    Delivery,
    decode_bundle,
    encode_bundle,
    user_key,
)


def test_a_bundle_round_trips_frames_byte_for_byte_in_order() -> None:
    frames = [
        Delivery(["u1", "a1"], '{"type":"message.new","body":"é \\" ok"}', "c1", 7),
        Delivery(["u1", "a1"], '{"type":"conversation.updated"}'),
    ]
    assert decode_bundle(encode_bundle(frames)) == frames


@pytest.mark.parametrize("body", [b"{", b'[["u1", null, null, 5]]', b'[[1, null, null, "f"]]', b"[[1]]"])
def test_a_malformed_bundle_is_refused(body: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode_bundle(body)


def test_one_bundle_carries_every_recipient_key_once() -> None:
    deliveries = [Delivery(["u1", "a1"], "f1", "c1", 1), Delivery(["u2", "a1"], "f2", "c2", 1)]
    [row] = bundles("chat.delivery", deliveries)
    keys = [row["routing_key"], *row["headers"]["CC"]]
    assert keys == [user_key("u1"), user_key("a1"), user_key("u2")]
    assert row["headers"][DELIVERY_BUNDLE_HEADER] == 1
    assert row["persistent"] is False
    assert decode_bundle(row["body"]) == deliveries


def test_bundles_split_before_the_routing_keys_outgrow_one_amqp_frame() -> None:
    deliveries = [
        Delivery([f"user{i}", "admin"], f"frame{i}", f"c{i}", 1) for i in range(BUNDLE_MAX_KEYS * 2)
    ]
    rows = bundles("chat.delivery", deliveries)
    assert len(rows) > 1
    carried: list[Delivery] = []
    for row in rows:
        keys = [row["routing_key"], *row["headers"].get("CC", [])]
        assert len(keys) == len(set(keys)) <= BUNDLE_MAX_KEYS
        inside = decode_bundle(row["body"])
        assert {user_key(u) for d in inside for u in d.to} == set(keys)
        carried.extend(inside)
    assert carried == deliveries  # nothing lost, order kept across bundles
    assert orjson.loads(rows[0]["body"])[0][3] == "frame0"
