"""SMS providers behind ``SmsSender``: the real Vonage SDK, or a log + dev inbox for local work."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from vonage import Auth, HttpClientOptions, Vonage
from vonage_http_client.errors import HttpRequestError
from vonage_sms import SmsMessage
from vonage_sms.errors import PartialFailureError, SmsError

from services.notifier.service_layer.ports import (
    OutgoingSms,
    PermanentSendError,
    SmsSender,
    TransientSendError,
)
from services.notifier.settings import NotifierSettings
from shared.logging import get_logger, mask_phone

log = get_logger(__name__)

# Vonage SMS API status codes worth retrying: 1 throttled, 5 internal error.
_TRANSIENT_STATUSES = frozenset({1, 5})
_STATUS_RE = re.compile(r"error code (\d+)")


@dataclass(frozen=True)
class InboxEntry:
    at: datetime
    to: str
    text: str
    reference: str
    id: str


@dataclass
class DevInbox:
    """The last SMS the ``log`` provider 'sent', for the dev inbox page (in memory, per process)."""

    size: int = 200
    entries: deque[InboxEntry] = field(default_factory=deque)

    def add(self, entry: InboxEntry) -> None:
        self.entries.appendleft(entry)
        while len(self.entries) > self.size:
            self.entries.pop()


class LogSmsSender:
    """Development provider: the log shows a masked number, the dev inbox the full text."""

    def __init__(self, inbox: DevInbox) -> None:
        self.inbox = inbox

    async def send(self, sms: OutgoingSms) -> str:
        message_id = f"log-{uuid.uuid4().hex[:12]}"
        self.inbox.add(InboxEntry(datetime.now(UTC), sms.to, sms.text, sms.reference, message_id))
        log.info("sms_logged", phone=mask_phone(sms.to), chars=len(sms.text), provider_id=message_id)
        return message_id


class VonageSmsSender:
    """Vonage SMS API through the official (synchronous) SDK, called in a worker thread."""

    def __init__(self, settings: NotifierSettings) -> None:
        assert settings.vonage_api_key and settings.vonage_api_secret
        self.sender_id = settings.sms_from
        self.client = Vonage(
            Auth(api_key=settings.vonage_api_key, api_secret=settings.vonage_api_secret),
            HttpClientOptions(
                rest_host=settings.vonage_rest_host,
                timeout=settings.vonage_timeout_s,
                max_retries=0,  # tenacity owns retries, with backoff and a record of each attempt
            ),
        )
        if settings.vonage_ca_bundle:
            # The SDK exposes no TLS option; its requests session honours ``verify`` like any other,
            # unless REQUESTS_CA_BUNDLE from the environment overrides it (trust_env).
            session = self.client.http_client._session
            session.verify = settings.vonage_ca_bundle
            session.trust_env = False
        # The SDK logs request headers (with credentials) at DEBUG.
        logging.getLogger("vonage").setLevel(logging.WARNING)

    def _send_blocking(self, sms: OutgoingSms) -> str:
        message = SmsMessage(
            to=sms.to.lstrip("+"), from_=self.sender_id, text=sms.text, client_ref=sms.reference[:100]
        )
        try:
            response = self.client.sms.send(message)
        except HttpRequestError as exc:
            status = exc.response.status_code
            detail = f"Vonage HTTP {status}"
            if status == 429:
                raise TransientSendError(detail, ambiguous=False) from exc
            if status >= 500:
                raise TransientSendError(detail) from exc  # a gateway error may follow acceptance
            raise PermanentSendError(detail) from exc
        except PartialFailureError as exc:
            # Some parts went out: resending would repeat them, a fallback would double the news.
            raise PermanentSendError("Vonage sent only part of the message", ambiguous=True) from exc
        except SmsError as exc:
            # A status in the reply: Vonage did not take the message.
            match = _STATUS_RE.search(str(exc))
            code = int(match.group(1)) if match else -1
            detail = f"Vonage status {code}: {str(exc)[-120:]}"
            if code in _TRANSIENT_STATUSES:
                raise TransientSendError(detail, ambiguous=False) from exc
            raise PermanentSendError(detail) from exc
        except requests.ConnectTimeout as exc:
            raise TransientSendError("Vonage unreachable: ConnectTimeout", ambiguous=False) from exc
        except requests.RequestException as exc:
            raise TransientSendError(f"Vonage unreachable: {type(exc).__name__}") from exc
        return response.messages[0].message_id or ""

    async def send(self, sms: OutgoingSms) -> str:
        return await asyncio.to_thread(self._send_blocking, sms)


def build_sms_sender(settings: NotifierSettings, inbox: DevInbox) -> SmsSender:
    """The one place that picks the SMS provider."""
    if settings.sms_provider == "vonage":
        return VonageSmsSender(settings)
    return LogSmsSender(inbox)
