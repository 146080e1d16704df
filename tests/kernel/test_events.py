"""The event catalogue: every event round-trips through JSON and is told apart by its type."""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shared import events
from shared.events import EVENT_TYPES, EventBase, event_type_name, parse_event


def _sample(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _sample(next(a for a in args if a is not type(None)))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation(
            **{name: _sample(f.annotation) for name, f in annotation.model_fields.items() if f.is_required()}
        )
    return {
        uuid.UUID: uuid.uuid4(),
        str: "text",
        int: 7,
        bool: True,
        datetime: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }[annotation]


def sample_event(cls: type[EventBase]) -> EventBase:
    payload_type = cls.model_fields["payload"].annotation
    return cls(payload=_sample(payload_type), correlation_id=uuid.uuid4())


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=event_type_name)
def test_every_event_round_trips_through_json(cls: type[EventBase]) -> None:
    event = sample_event(cls)
    decoded = parse_event(event.to_json())
    assert type(decoded) is cls
    assert decoded == event
    assert decoded.model_dump()["version"] >= 1


def test_catalogue_lists_every_event_class_once() -> None:
    defined = {
        obj
        for obj in vars(events).values()
        if isinstance(obj, type) and issubclass(obj, EventBase) and obj is not EventBase
    }
    assert defined == set(EVENT_TYPES)
    names = [event_type_name(cls) for cls in EVENT_TYPES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{}", b'{"type": "no.such.event", "version": 1, "payload": {}}', b"[]"],
)
def test_malformed_or_unknown_events_are_refused(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_event(raw)


def test_an_unknown_version_is_refused() -> None:
    event = sample_event(events.MessageRead)
    body = event.to_json().replace(b'"version":1', b'"version":99')
    with pytest.raises(ValidationError):
        parse_event(body)
