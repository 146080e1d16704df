"""Structured JSON logs, one object per line, with secrets scrubbed before rendering."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

SECRET_KEYS = frozenset(
    {
        "password",
        "new_password",
        "current_password",
        "token",
        "access_token",
        "refresh_token",
        "code",
        "otp",
        "secret",
        "authorization",
        "cookie",
        "api_secret",
        "private_key",
    }
)
_PHONE_RE = re.compile(r"\+\d{6,15}")


def mask_phone(phone: str) -> str:
    """Show only the country code and the last four digits: ``+7 *** ***-12-34``."""
    digits = phone.lstrip("+")
    if len(digits) < 6:
        return "***"
    try:
        import phonenumbers

        country = str(phonenumbers.parse(phone).country_code)
    except Exception:
        country = digits[:1]
    tail = digits[-4:]
    return f"+{country} *** ***-{tail[:2]}-{tail[2:]}"


def _scrub(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        lowered = key.lower()
        if lowered in SECRET_KEYS:
            event_dict[key] = "[redacted]"
        elif lowered == "phone" and isinstance(event_dict[key], str):
            event_dict[key] = mask_phone(event_dict[key])
        elif isinstance(event_dict[key], str) and _PHONE_RE.search(event_dict[key]):
            event_dict[key] = _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), event_dict[key])
    return event_dict


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    """Route structlog and stdlib logging through one JSON renderer on stdout."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # The traceback is rendered into a string first, so the scrubber sees (and masks) it too.
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _scrub, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.processors.format_exc_info,
                _scrub,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for noisy in ("aiormq", "aio_pika", "uvicorn.access", "uvicorn.error", "httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
