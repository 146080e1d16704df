"""What a digest says on a channel, and its second chance on the fallback channel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.adapters import repository as repo
from services.notifier.domain.digest import conversation_link, render_digest_email, render_digest_sms
from services.notifier.domain.model import Policy, Recipient, UnreadMessage
from services.notifier.domain.rules import fallback_channel
from services.notifier.service_layer.events import PRIORITY_DIGEST


@dataclass(frozen=True)
class DigestSettings:
    frontend_url: str
    unsubscribe: str
    max_items: int = 10


def digest_content(
    *,
    channel: str,
    recipient: Recipient,
    conversation_id: uuid.UUID,
    messages: Sequence[UnreadMessage],
    settings: DigestSettings,
) -> dict[str, Any]:
    """The notification columns holding what the digest says on ``channel``."""
    link = conversation_link(settings.frontend_url, conversation_id)
    if channel == "email":
        rendered = render_digest_email(
            recipient_name=recipient.display_name,
            messages=messages,
            link=link,
            unsubscribe=settings.unsubscribe,
            max_items=settings.max_items,
        )
        return {"subject": rendered.subject, "body_text": rendered.text, "body_html": rendered.html}
    return {"body_text": render_digest_sms(messages=messages, link=link)}


async def queue_fallback(
    *,
    session: AsyncSession,
    failed: RowMapping,
    now: datetime,
    policy: Policy,
    settings: DigestSettings,
) -> bool:
    """Queue the digest that ``failed`` refused for good once more, on the role's fallback channel.

    Call it only after a clear refusal, in the transaction that records the failure. The copy
    covers the same messages minus those read or deleted since; it takes over the cooldown the
    first one reserved. A fallback never has a fallback of its own. True when one was queued.
    """
    if failed["kind"] != "digest" or failed["fallback_of"] is not None or failed["channel"] is None:
        return False
    recipient = await repo.load_recipient(session=session, user_id=failed["recipient_id"])
    if recipient is None:
        return False
    choice = fallback_channel(recipient, policy, failed=failed["channel"])
    if choice is None:
        return False
    thread = await repo.load_thread_of(
        session=session, recipient_id=failed["recipient_id"], conversation_id=failed["conversation_id"]
    )
    limit = failed["max_seq"] or 0
    messages = tuple(m for m in thread.visible_unread() if m.seq <= limit) if thread else ()
    if not messages:
        return False
    channel, destination = choice
    return await repo.insert_notification(
        session=session,
        idempotency_key=f"{failed['idempotency_key']}:fallback",
        kind="digest",
        priority=PRIORITY_DIGEST,
        recipient_id=failed["recipient_id"],
        conversation_id=failed["conversation_id"],
        channel=channel,
        destination=destination,
        message_count=len(messages),
        max_seq=failed["max_seq"],
        first_message_at=failed["first_message_at"],
        status="queued",
        created_at=now,
        fallback_of=failed["id"],
        prior_notified_at=failed["prior_notified_at"],
        prior_notified_seq=failed["prior_notified_seq"],
        prior_cooldown_level=failed["prior_cooldown_level"],
        **digest_content(
            channel=channel,
            recipient=recipient,
            conversation_id=failed["conversation_id"],
            messages=messages,
            settings=settings,
        ),
    )
